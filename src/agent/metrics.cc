#include "tollgate/agent/metrics.h"

#include <cstdio>

#include "tollgate/util/metrics_text.h"

namespace tollgate::agent {
namespace {

// A Prometheus label value: backslash, double quote and newline escaped.
void append_label(std::string& out, std::string_view v) {
  for (const char c : v) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

void append_number(std::string& out, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  out += buf;
}

void header(std::string& out, const char* name, const char* type, const char* help) {
  util::append_metric_header(out, name, type, help);
}

}  // namespace

std::string_view sync_error_name(SyncError e) {
  switch (e) {
    case SyncError::kUnreachable:
      return "unreachable";
    case SyncError::kNotFound:
      return "not_found";
    case SyncError::kUnavailable:
      return "unavailable";
    case SyncError::kServerError:
      return "server_error";
    case SyncError::kRefused:
      return "refused";
    case SyncError::kUnexpected:
      return "unexpected_status";
    case SyncError::kInvalidTable:
      return "invalid_table";
    case SyncError::kPersist:
      return "persist";
  }
  return "unknown";
}

void AgentMetrics::decided(const Answer& a, std::chrono::nanoseconds elapsed) {
  const double seconds = std::chrono::duration<double>(elapsed).count();
  std::size_t b = 0;
  while (b < kBuckets.size() && seconds > kBuckets[b]) ++b;
  buckets_[b].fetch_add(1, std::memory_order_relaxed);
  latency_ns_.fetch_add(static_cast<std::uint64_t>(elapsed.count()), std::memory_order_relaxed);
  latency_count_.fetch_add(1, std::memory_order_relaxed);
  std::string_view reason;
  for (const auto& [name, value] : a.headers) {
    if (name == "X-Tollgate-Reason") reason = value;
  }
  std::lock_guard lock(mu_);
  ++decisions_[{a.allowed, a.policy}];
  if (!reason.empty()) ++reasons_[std::string(reason)];
}

void AgentMetrics::sync_error(SyncError e) {
  sync_errors_[static_cast<std::size_t>(e)].fetch_add(1, std::memory_order_relaxed);
}

void AgentMetrics::synced_at(std::chrono::system_clock::time_point t) {
  synced_at_ms_.store(
      std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count(),
      std::memory_order_relaxed);
}

void AgentMetrics::http_refused(int status) {
  (void)status;
  http_refused_.fetch_add(1, std::memory_order_relaxed);
}

std::uint64_t AgentMetrics::decisions(bool allowed, const std::string& policy) const {
  std::lock_guard lock(mu_);
  auto it = decisions_.find({allowed, policy});
  return it == decisions_.end() ? 0 : it->second;
}

std::uint64_t AgentMetrics::sync_errors(SyncError e) const {
  return sync_errors_[static_cast<std::size_t>(e)].load(std::memory_order_relaxed);
}

std::string AgentMetrics::render(const Authorizer& authorizer,
                                 std::chrono::system_clock::time_point now) const {
  std::string out;
  out.reserve(4096);
  render_decisions(out);
  render_latency(out);
  render_table(out, authorizer, now);
  render_sync(out);
  return out;
}

void AgentMetrics::render_decisions(std::string& out) const {
  header(out, "tollgate_agent_decisions_total", "counter",
         "Requests decided, by decision and the deciding policy (empty: a default decision or "
         "no table).");
  {
    std::lock_guard lock(mu_);
    for (const auto& [key, n] : decisions_) {
      out += "tollgate_agent_decisions_total{decision=\"";
      out += key.first ? "allow" : "deny";
      out += "\",policy=\"";
      append_label(out, key.second);
      out += "\"} " + std::to_string(n) + "\n";
    }
    header(out, "tollgate_agent_denials_without_table_decision_total", "counter",
           "Requests denied without the table deciding them, by reason (no-table: none "
           "fetched or restored; unreadable-request: the proxy's request could not be read).");
    for (const char* reason : {"no-table", "unreadable-request"}) {
      auto it = reasons_.find(reason);
      out += "tollgate_agent_denials_without_table_decision_total{reason=\"";
      out += reason;
      out += "\"} " + std::to_string(it == reasons_.end() ? 0 : it->second) + "\n";
    }
  }
}

void AgentMetrics::render_latency(std::string& out) const {
  header(out, "tollgate_agent_decision_duration_seconds", "histogram",
         "Time to read a request and decide it, inside the agent.");
  std::uint64_t cumulative = 0;
  for (std::size_t b = 0; b <= kBuckets.size(); ++b) {
    cumulative += buckets_[b].load(std::memory_order_relaxed);
    out += "tollgate_agent_decision_duration_seconds_bucket{le=\"";
    if (b < kBuckets.size()) {
      append_number(out, kBuckets[b]);
    } else {
      out += "+Inf";
    }
    out += "\"} " + std::to_string(cumulative) + "\n";
  }
  out += "tollgate_agent_decision_duration_seconds_sum ";
  append_number(out, static_cast<double>(latency_ns_.load(std::memory_order_relaxed)) / 1e9);
  out += "\ntollgate_agent_decision_duration_seconds_count " +
         std::to_string(latency_count_.load(std::memory_order_relaxed)) + "\n";
}

void AgentMetrics::render_table(std::string& out, const Authorizer& authorizer,
                                std::chrono::system_clock::time_point now) const {
  const auto active = authorizer.active();
  header(out, "tollgate_agent_table_info", "gauge",
         "The active table: its hash and where it came from (fetched from the controller, or "
         "restored from --state-dir). Absent while the agent has no table.");
  if (active) {
    out += "tollgate_agent_table_info{hash=\"";
    append_label(out, active->table.hash);
    out += "\",source=\"";
    out += active->source == ActiveTable::Source::kFetched ? "fetched" : "restored";
    out += "\"} 1\n";
  }
  header(out, "tollgate_agent_table_age_seconds", "gauge",
         "Now minus the controller's X-Tollgate-Synced-At for the active table (how stale the "
         "controller's view was, as last heard). Absent before the first table.");
  const std::int64_t synced_ms = synced_at_ms_.load(std::memory_order_relaxed);
  if (active && synced_ms != 0) {
    const auto now_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
    out += "tollgate_agent_table_age_seconds ";
    append_number(out, static_cast<double>(now_ms - synced_ms) / 1000.0);
    out += '\n';
  }
}

void AgentMetrics::render_sync(std::string& out) const {
  header(out, "tollgate_agent_table_updates_total", "counter",
         "Controller answers by result: a new table fetched, or not modified (304).");
  out += "tollgate_agent_table_updates_total{result=\"fetched\"} " +
         std::to_string(fetched_.load(std::memory_order_relaxed)) + "\n";
  out += "tollgate_agent_table_updates_total{result=\"not_modified\"} " +
         std::to_string(not_modified_.load(std::memory_order_relaxed)) + "\n";
  header(out, "tollgate_agent_sync_errors_total", "counter",
         "Failed syncs with the controller, by kind; the last good table stays enforced.");
  for (std::size_t k = 0; k < kSyncErrorKinds; ++k) {
    out += "tollgate_agent_sync_errors_total{kind=\"";
    out += sync_error_name(static_cast<SyncError>(k));
    out += "\"} " + std::to_string(sync_errors_[k].load(std::memory_order_relaxed)) + "\n";
  }
  header(out, "tollgate_agent_http_refused_total", "counter",
         "HTTP requests the agent's server refused before deciding (malformed, too large).");
  out += "tollgate_agent_http_refused_total " +
         std::to_string(http_refused_.load(std::memory_order_relaxed)) + "\n";
}

}  // namespace tollgate::agent

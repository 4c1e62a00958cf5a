#include "tollgate/agent/sync.h"

#include <nlohmann/json.hpp>

#include "tollgate/agent/table_store.h"
#include "tollgate/compile/compile.h"
#include "tollgate/util/backoff.h"
#include "tollgate/util/log.h"
#include "tollgate/util/time.h"

namespace tollgate::agent {
namespace {

constexpr std::chrono::seconds kClientSlack{30};  // client timeout = wait + this

SyncError kind_of_status(int status) {
  if (status == 404) return SyncError::kNotFound;
  if (status == 503) return SyncError::kUnavailable;
  if (status == 401 || status == 403) return SyncError::kRefused;
  if (status >= 500) return SyncError::kServerError;
  return SyncError::kUnexpected;
}

// The controller's {"error": "..."} message, or the body's start.
std::string error_text(const std::string& body) {
  const auto j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_object()) {
    if (auto it = j.find("error"); it != j.end() && it->is_string()) return it->get<std::string>();
  }
  return body.substr(0, 200);
}

}  // namespace

Syncer::Syncer(SyncOptions options, std::unique_ptr<k8s::Transport> transport,
               Authorizer& authorizer, AgentMetrics& metrics)
    : options_(std::move(options)),
      target_("/v1/tables/" + options_.namespace_ + "/" + options_.pod),
      transport_(std::move(transport)),
      authorizer_(authorizer),
      metrics_(metrics) {}

Syncer::~Syncer() { stop(); }

void Syncer::start() {
  thread_ = std::thread([this] {
    auto thrown = util::run_catching([this] { run(); });
    if (thrown) util::report_thread_failure(options_.failures, "sync", *thrown);
  });
}

void Syncer::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  transport_->cancel();
  if (thread_.joinable()) thread_.join();
}

SyncStatus Syncer::status() const {
  std::lock_guard lock(mu_);
  return status_;
}

void Syncer::fail(SyncError kind, const std::string& message) {
  metrics_.sync_error(kind);
  bool changed = false;
  {
    std::lock_guard lock(mu_);
    changed = status_.controller_ok || status_.last_error != message;
    status_.controller_ok = false;
    status_.last_error = message;
  }
  // Logged when the failure changes, not on every retry of the same one.
  if (changed) {
    const auto active = authorizer_.active();
    util::log_warn(active ? "cannot sync the table; the last good table stays enforced"
                          : "cannot sync the table; with none yet, every request is denied",
                   {{"kind", std::string(sync_error_name(kind))},
                    {"error", message},
                    {"table", active ? active->table.hash : std::string()}});
  }
}

bool Syncer::accept(const k8s::ApiResponse& r) {
  if (auto at = util::parse_rfc3339(r.header("x-tollgate-synced-at"))) metrics_.synced_at(*at);
  if (r.status == 304) {
    metrics_.not_modified();
    return true;
  }
  if (r.status != 200) {
    fail(kind_of_status(r.status),
         "GET " + target_ + ": " + std::to_string(r.status) + " " + error_text(r.body));
    return false;
  }
  auto invalid = [&](const std::string& why) {
    fail(SyncError::kInvalidTable, "GET " + target_ + ": the table is not used: " + why);
    return false;
  };
  nlohmann::json j = nlohmann::json::parse(r.body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return invalid("the body is not a JSON object");
  auto api = j.find("apiVersion");
  if (api == j.end() || !api->is_string() || *api != compile::kTableApiVersion) {
    return invalid(std::string("apiVersion is not ") + compile::kTableApiVersion);
  }
  if (!j.contains("hash")) return invalid("it has no hash");
  auto table = compile::table_from_json(j);
  if (!table.ok()) return invalid(table.error().message);
  const std::string etag = r.header("etag");
  if (etag != "\"" + table->hash + "\"") {
    return invalid("its ETag " + etag + " is not its hash \"" + table->hash + "\"");
  }
  auto active = std::make_shared<ActiveTable>();
  active->table = std::move(*table);
  active->etag = etag;
  active->synced_at = r.header("x-tollgate-synced-at");
  active->source = ActiveTable::Source::kFetched;
  const std::string hash = active->table.hash;
  authorizer_.activate(active);
  etag_ = etag;
  metrics_.table_fetched();
  {
    std::lock_guard lock(mu_);
    status_.have_table = true;
    status_.restored = false;
    status_.controller_ok = true;
    status_.last_error.clear();
  }
  util::log_info(
      "table activated",
      {{"table", hash}, {"revision", r.header("x-tollgate-revision")}, {"source", "controller"}});
  if (options_.state_dir.empty()) return true;
  PersistedTable saved{options_.namespace_, options_.pod, etag, active->synced_at, std::move(j)};
  auto written = save_table(options_.state_dir, saved);
  if (!written.ok()) {
    // The table is enforced; only a restart without the controller would miss it.
    metrics_.sync_error(SyncError::kPersist);
    util::log_warn("the active table cannot be saved in the state directory",
                   {{"error", written.error().message}, {"table", hash}});
  } else {
    util::log_debug("table saved", {{"dir", options_.state_dir}, {"table", hash}});
  }
  return true;
}

bool Syncer::sync_once(std::chrono::milliseconds timeout, bool wait) {
  k8s::HeaderList headers;
  if (!etag_.empty()) headers.emplace_back("If-None-Match", etag_);
  if (wait) headers.emplace_back("Prefer", "wait=" + std::to_string(options_.wait.count()));
  auto r = transport_->get(target_, timeout, kMaxStateBytes, headers);
  if (!r.ok()) {
    fail(SyncError::kUnreachable, r.error().message);
    return false;
  }
  const bool ok = accept(*r);
  if (ok) {
    std::lock_guard lock(mu_);
    status_.controller_ok = true;
    status_.last_error.clear();
  }
  return ok;
}

bool Syncer::restore() {
  if (options_.state_dir.empty() || authorizer_.active()) return false;
  auto loaded = load_table(options_.state_dir, options_.namespace_, options_.pod);
  if (!loaded.ok()) {
    util::log_warn("no saved table restored; requests are denied until the controller answers",
                   {{"error", loaded.error().message}});
    std::lock_guard lock(mu_);
    status_.restore_error = loaded.error().message;
    return false;
  }
  auto active = std::make_shared<ActiveTable>();
  active->table = std::move(loaded->table);
  active->etag = loaded->persisted.etag;
  active->synced_at = loaded->persisted.synced_at;
  active->source = ActiveTable::Source::kRestored;
  if (auto at = util::parse_rfc3339(active->synced_at)) metrics_.synced_at(*at);
  const std::string hash = active->table.hash;
  authorizer_.activate(std::move(active));
  // The saved ETag is sent: an unchanged table then costs the controller a 304.
  etag_ = loaded->persisted.etag;
  {
    std::lock_guard lock(mu_);
    status_.have_table = true;
    status_.restored = true;
  }
  util::log_warn(
      "the controller cannot be reached: enforcing the table saved in the state "
      "directory until it can",
      {{"table", hash}, {"syncedAt", loaded->persisted.synced_at}});
  return true;
}

void Syncer::run() {
  util::Backoff backoff(options_.backoff_initial, options_.backoff_cap);
  bool first = true;
  for (;;) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
    }
    util::injection_point("sync");
    const auto timeout =
        first ? options_.first_timeout
              : std::chrono::duration_cast<std::chrono::milliseconds>(options_.wait + kClientSlack);
    const bool ok = sync_once(timeout, !first);
    if (first && !ok) restore();
    first = false;
    if (ok) {
      backoff.reset();
      continue;
    }
    const auto delay = backoff.next();
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, delay, [this] { return stopping_; });
  }
}

}  // namespace tollgate::agent

#include "tollgate/status/writer.h"

#include <charconv>

#include "tollgate/util/log.h"
#include "tollgate/util/metrics_text.h"
#include "tollgate/util/time.h"

namespace tollgate::status {
namespace {

using nlohmann::json;
using Steady = std::chrono::steady_clock;

}  // namespace

StatusWriter::StatusWriter(WriterOptions options, std::unique_ptr<k8s::Transport> transport)
    : options_(std::move(options)),
      transport_(std::move(transport)),
      reconciler_(options_.mesh),
      recorder_(*transport_, options_.event_options) {}

StatusWriter::~StatusWriter() { stop(); }

void StatusWriter::submit(const index::Event& e) {
  if (e.kind != index::Kind::kPolicy || e.type == index::Event::Type::kHealth) return;
  {
    std::lock_guard lock(mu_);
    queue_.push_back(e);
  }
  cv_.notify_all();
}

void StatusWriter::set_leading(bool leading) {
  {
    std::lock_guard lock(mu_);
    if (leading && !leading_) became_leader_ = true;
    leading_ = leading;
  }
  cv_.notify_all();
  if (!leading) std::lock_guard wait_for_write(write_mu_);
}

void StatusWriter::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  transport_->cancel();
}

void StatusWriter::back_off(const k8s::ApiResponse* r) {
  auto delay = std::chrono::duration_cast<Steady::duration>(options_.backoff.next());
  if (r != nullptr) {  // a 429's Retry-After, when it asks for longer
    const std::string after = r->header("retry-after");
    int seconds = 0;
    auto [p, ec] = std::from_chars(after.data(), after.data() + after.size(), seconds);
    if (ec == std::errc() && seconds > 0 && std::chrono::seconds(seconds) > delay) {
      delay = std::chrono::seconds(seconds);
    }
  }
  retry_at_ = Steady::now() + delay;
}

void StatusWriter::record_events(const Plan& plan) {
  if (!options_.events) return;
  const auto slash = plan.key.find('/');
  const InvolvedObject object{plan.api_version, "AuthorizationPolicy", plan.key.substr(0, slash),
                              plan.key.substr(slash + 1), plan.uid};
  for (const Condition& c : plan.want) {
    const Condition* prev = nullptr;
    for (const Condition& b : plan.before) {
      if (b.type == c.type) prev = &b;
    }
    const bool warn = c.status == "False" && (prev == nullptr || !(*prev == c));
    const bool recovered = c.status == "True" && prev != nullptr && prev->status == "False";
    if (!warn && !recovered) continue;
    recorder_.record(object, warn ? "Warning" : "Normal", c.reason, c.message,
                     std::chrono::system_clock::now(), Steady::now());
  }
}

// After a 409: the object as it is now, and whether to try again.
StatusWriter::Done StatusWriter::reread(const std::string& key, const std::string& path) {
  k8s::Call get;
  get.target = path.substr(0, path.size() - std::string_view("/status").size());
  auto r = transport_->send(get);
  if (r.ok() && r->status == 200) {
    reconciler_.observed(key, json::parse(r->body, nullptr, false));
    return Done::kLater;  // plan again at once
  }
  if (r.ok() && r->status == 404) {
    reconciler_.gone(key);
    ++stats_.not_found;
    return Done::kYes;
  }
  ++stats_.error;
  util::log_warn("a policy could not be read after a conflict",
                 {{"policy", key}, {"error", k8s::describe(r)}});
  back_off(r.ok() ? &*r : nullptr);
  return Done::kLater;
}

StatusWriter::Done StatusWriter::write(const std::string& key) {
  for (int conflicts = 0; conflicts < options_.max_conflicts; ++conflicts) {
    auto plan = reconciler_.plan(key, util::rfc3339_seconds(std::chrono::system_clock::now()));
    if (!plan) return Done::kYes;
    if (auto it = rejected_.find(key); it != rejected_.end()) {
      // Not retried until the object changes.
      if (it->second == plan->resource_version) return Done::kYes;
      rejected_.erase(it);
    }
    std::lock_guard writing(write_mu_);
    {
      std::lock_guard lock(mu_);
      if (!leading_ || stopping_) return Done::kLater;
    }
    k8s::Call call;
    call.method = "PATCH";
    call.target = plan->path;
    call.content_type = "application/merge-patch+json";
    call.body = plan->patch;
    auto r = transport_->send(call);
    const int status = r.ok() ? r->status : 0;
    if (status == 200) {
      ++stats_.ok;
      options_.backoff.reset();
      reconciler_.observed(key, json::parse(r->body, nullptr, false));
      record_events(*plan);
      return Done::kYes;
    }
    if (status == 409) {
      ++stats_.conflict;
      if (reread(key, plan->path) == Done::kYes) return Done::kYes;
      if (retry_at_ > Steady::now()) return Done::kLater;
      continue;
    }
    if (status == 404) {
      ++stats_.not_found;
      reconciler_.gone(key);
      return Done::kYes;
    }
    if (status == 422 || status == 400) {
      ++stats_.invalid;
      rejected_[key] = plan->resource_version;
      util::log_warn("the API server refused a policy's status",
                     {{"policy", key}, {"error", k8s::describe(r)}});
      return Done::kYes;
    }
    ++stats_.error;
    util::log_warn("a policy's status could not be written",
                   {{"policy", key}, {"error", k8s::describe(r)}});
    back_off(r.ok() ? &*r : nullptr);
    return Done::kLater;
  }
  back_off(nullptr);  // conflicts in a row: someone keeps writing it
  return Done::kLater;
}

void StatusWriter::run() {
  while (!stopping_) {
    std::deque<index::Event> events;
    bool leading = false, became = false;
    {
      std::unique_lock lock(mu_);
      auto ready = [&] {
        return stopping_ || !queue_.empty() || became_leader_ ||
               (leading_ && !pending_.empty() && Steady::now() >= retry_at_);
      };
      if (leading_ && !pending_.empty()) {
        cv_.wait_until(lock, retry_at_, ready);
      } else {
        cv_.wait(lock, ready);
      }
      events.swap(queue_);
      leading = leading_;
      became = std::exchange(became_leader_, false);
    }
    if (stopping_) break;
    for (const auto& e : events) reconciler_.apply(e);
    if (became) reconciler_.mark_all();
    if (!leading) continue;
    for (auto& key : reconciler_.take_marked()) pending_.insert(std::move(key));
    while (!pending_.empty() && !stopping_ && Steady::now() >= retry_at_) {
      const std::string key = *pending_.begin();
      if (write(key) == Done::kLater) break;
      pending_.erase(key);
      std::lock_guard lock(mu_);
      if (!queue_.empty() || !leading_) break;  // news first
    }
  }
}

std::string StatusWriter::metrics() const {
  using Counter = std::pair<const char*, const std::atomic<std::uint64_t>*>;
  // One counter family, a series per result.
  auto family = [](std::string& out, const char* name, const char* help,
                   std::initializer_list<Counter> results) {
    util::append_metric_header(out, name, "counter", help);
    for (const auto& [result, v] : results) {
      out += std::string(name) + "{result=\"" + result + "\"} " + std::to_string(v->load()) + "\n";
    }
  };
  std::string out;
  family(out, "tollgate_status_writes_total", "Status writes to AuthorizationPolicies by result.",
         {{"ok", &stats_.ok},
          {"conflict", &stats_.conflict},
          {"not_found", &stats_.not_found},
          {"invalid", &stats_.invalid},
          {"error", &stats_.error}});
  const EventRecorder::Stats& e = recorder_.stats();
  family(out, "tollgate_events_total", "Events about AuthorizationPolicies by result.",
         {{"created", &e.created},
          {"patched", &e.patched},
          {"limited", &e.limited},
          {"failed", &e.failed}});
  return out;
}

}  // namespace tollgate::status

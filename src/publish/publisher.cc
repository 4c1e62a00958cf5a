#include "tollgate/publish/publisher.h"

#include <algorithm>

#include "tollgate/util/log.h"

namespace tollgate::publish {

using Clock = std::chrono::steady_clock;

Publisher::Publisher(policy::MeshConfig mesh, PublisherOptions options)
    : options_(options), index_(std::move(mesh)), queue_(options.queue_capacity) {
  // An empty, unsynced snapshot from the start: readers see "not yet synced", never nothing.
  auto first = builder_.build(index_, index_.take_changes());
  cell_.publish(first.snapshot);
}

Publisher::~Publisher() { stop(); }

void Publisher::add_listener(Listener l) { listeners_.push_back(std::move(l)); }

void Publisher::start() {
  if (thread_.joinable()) return;
  thread_ = std::thread([this] {
    const auto failure = util::run_catching([this] { run(); });
    if (!failure) return;
    queue_.close();  // producers must not block on a queue nobody drains
    // Reported before failed() turns true, so that a waiter who sees failed() also sees the
    // report (its cause).
    util::report_thread_failure(options_.failures, "index", *failure);
    failed_ = true;
    wake_waiters();
  });
}

void Publisher::wake_waiters() const {
  std::lock_guard lock(mu_);  // a waiter between its test and its wait cannot miss this
  published_.notify_all();
}

void Publisher::stop() {
  queue_.close();
  if (thread_.joinable()) thread_.join();
}

Clock::duration Publisher::publish_now() {
  const auto t0 = Clock::now();
  auto changes = index_.take_changes();
  auto result = builder_.build(index_, changes);
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  cell_.publish(result.snapshot);
  log_publish(result, seconds);
  {
    std::lock_guard lock(mu_);
    stats_.publishes++;
    stats_.tables_compiled += result.compiled;
    stats_.last_build_seconds = seconds;
  }
  published_.notify_all();
  for (const auto& l : listeners_) l(result);
  return Clock::now() - t0;
}

void Publisher::log_publish(const SnapshotBuilder::Result& r, double seconds) {
  const auto& s = *r.snapshot;
  if (s.synced && !synced_logged_) {
    synced_logged_ = true;
    util::log_info("first full sync published", {{"revision", std::to_string(s.revision)},
                                                 {"pods", std::to_string(s.pods)},
                                                 {"tables", std::to_string(s.tables)}});
  }
  if (!util::log_enabled(util::LogLevel::kDebug)) return;
  util::log_debug("snapshot published", {{"revision", std::to_string(s.revision)},
                                         {"synced", s.synced ? "true" : "false"},
                                         {"pods", std::to_string(s.pods)},
                                         {"tables", std::to_string(s.tables)},
                                         {"changed", std::to_string(r.changed_pods.size())},
                                         {"compiled", std::to_string(r.compiled)},
                                         {"seconds", std::to_string(seconds)}});
}

void Publisher::run() {
  std::vector<index::Event> batch;
  bool pending = false;
  Clock::time_point first_change{}, last_event{};
  Clock::duration delay = options_.busy_delay;  // after the first change, while busy
  for (;;) {
    const auto now = Clock::now();
    const auto deadline = pending ? std::min(first_change + delay, last_event + options_.quiet)
                                  : now + std::chrono::seconds(1);
    batch.clear();
    const bool open = queue_.pop_all(batch, deadline);
    if (!batch.empty()) {
      util::injection_point("publisher");
      last_event = Clock::now();
      for (auto& e : batch) index_.apply(std::move(e));
      {
        std::lock_guard lock(mu_);
        stats_.events += batch.size();
      }
      if (!pending && !index_.changes().empty()) {
        pending = true;
        first_change = last_event;
      }
    }
    const auto t = Clock::now();
    if (pending && (!open || t >= last_event + options_.quiet || t >= first_change + delay)) {
      const auto built = publish_now();
      pending = false;
      delay = std::clamp<Clock::duration>(4 * built, options_.busy_delay, options_.max_delay);
    }
    if (!open) break;
  }
}

std::shared_ptr<const Snapshot> Publisher::wait_for(
    const std::function<bool(const Snapshot&)>& pred, std::chrono::milliseconds timeout) const {
  const auto deadline = Clock::now() + timeout;
  std::unique_lock lock(mu_);
  for (;;) {
    auto s = cell_.load();
    if (s && pred(*s)) return s;
    if (failed_ || published_.wait_until(lock, deadline) == std::cv_status::timeout) {
      s = cell_.load();
      return s && pred(*s) ? s : nullptr;
    }
  }
}

PublisherStats Publisher::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

}  // namespace tollgate::publish

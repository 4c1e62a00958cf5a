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
    try {
      run();
    } catch (const std::exception& e) {
      failed_ = true;
      util::log_error("index thread failed", {{"error", e.what()}});
    } catch (...) {
      failed_ = true;
      util::log_error("index thread failed");
    }
    published_.notify_all();
  });
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

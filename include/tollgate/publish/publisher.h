// Publisher: the index thread. Drains the event queue into the Index, and after a short quiet
// period (with a hard cap while events keep coming) builds and publishes the next Snapshot.
// The index and builder are touched only by that thread; current(), wait_for() and the queue
// are thread-safe. Listeners run on the index thread right after each publish. If the index
// thread dies (an exception), the queue closes, failed() turns true, waiters wake and the
// failure is reported to `PublisherOptions::failures`.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "tollgate/index/index.h"
#include "tollgate/publish/snapshot.h"
#include "tollgate/util/bounded_queue.h"
#include "tollgate/util/snapshot_cell.h"
#include "tollgate/util/thread_failure.h"

namespace tollgate::publish {

// When to publish: once no event came for `quiet`; while events keep coming, `busy_delay`
// after the first change, stretched to 4 times the last build's time (publishing uses at
// most a fifth of the index thread) but never beyond `max_delay`.
struct PublisherOptions {
  std::chrono::microseconds quiet{1000};
  std::chrono::milliseconds max_delay{100};
  std::size_t queue_capacity = 1 << 14;
  std::chrono::microseconds busy_delay{5000};
  util::ThreadFailures* failures = nullptr;  // told if the index thread dies; may be null
};

struct PublisherStats {
  std::uint64_t events = 0, publishes = 0, tables_compiled = 0;
  double last_build_seconds = 0;
};

class Publisher {
 public:
  using Listener = std::function<void(const SnapshotBuilder::Result&)>;

  explicit Publisher(policy::MeshConfig mesh, PublisherOptions options = {});
  ~Publisher();
  Publisher(const Publisher&) = delete;
  Publisher& operator=(const Publisher&) = delete;

  void add_listener(Listener l);  // before start()
  void start();
  void stop();  // closes the queue, publishes what is pending, joins

  util::BoundedQueue<index::Event>& queue() { return queue_; }
  bool submit(index::Event e) { return queue_.push(std::move(e)); }
  std::shared_ptr<const Snapshot> current() const { return cell_.load(); }

  // Blocks until a published snapshot satisfies `pred` or `timeout` passes.
  std::shared_ptr<const Snapshot> wait_for(const std::function<bool(const Snapshot&)>& pred,
                                           std::chrono::milliseconds timeout) const;
  PublisherStats stats() const;
  bool failed() const { return failed_.load(); }
  // Wakes every wait_for() to test its predicate again (one that looks beyond snapshots, e.g.
  // at a thread failure).
  void wake_waiters() const;

 private:
  void run();
  std::chrono::steady_clock::duration publish_now();  // how long it took
  void log_publish(const SnapshotBuilder::Result& r, double seconds);

  PublisherOptions options_;
  index::Index index_;
  SnapshotBuilder builder_;
  util::BoundedQueue<index::Event> queue_;
  util::SnapshotCell<Snapshot> cell_;
  std::vector<Listener> listeners_;
  std::thread thread_;
  mutable std::mutex mu_;
  mutable std::condition_variable published_;
  PublisherStats stats_;
  std::atomic<bool> failed_{false};
  bool synced_logged_ = false;  // index thread
};

}  // namespace tollgate::publish

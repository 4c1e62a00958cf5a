// SnapshotCell<T>: holds the current immutable snapshot. One writer publishes; any number of
// readers load() a shared_ptr that stays valid however long they hold it. Thread-safe.
//
// A mutex guards the pointer for the instant it is copied. Not std::atomic<std::shared_ptr>:
// libstdc++ 12 implements it with a lock bit whose reader side unlocks with a relaxed store,
// so a reader's copy does not happen-before the next publish, and ThreadSanitizer reports the
// race (google/sanitizers#1558). It is a lock either way; this one is std::mutex's.
#pragma once

#include <memory>
#include <mutex>
#include <utility>

namespace tollgate::util {

template <typename T>
class SnapshotCell {
 public:
  std::shared_ptr<const T> load() const {
    std::lock_guard lock(mu_);
    return cell_;
  }
  void publish(std::shared_ptr<const T> next) {
    std::shared_ptr<const T> old;  // released outside the lock: it may be the last reference
    {
      std::lock_guard lock(mu_);
      old = std::exchange(cell_, std::move(next));
    }
  }

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const T> cell_;
};

}  // namespace tollgate::util

// SnapshotCell<T>: holds the current immutable snapshot. One writer publishes; any number of
// readers load() a shared_ptr that stays valid however long they hold it. Thread-safe.
#pragma once

#include <atomic>
#include <memory>

namespace tollgate::util {

template <typename T>
class SnapshotCell {
 public:
  std::shared_ptr<const T> load() const { return cell_.load(std::memory_order_acquire); }
  void publish(std::shared_ptr<const T> next) {
    cell_.store(std::move(next), std::memory_order_release);
  }

 private:
  std::atomic<std::shared_ptr<const T>> cell_;
};

}  // namespace tollgate::util

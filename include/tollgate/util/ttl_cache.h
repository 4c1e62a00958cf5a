// A bounded cache whose entries expire: at most `capacity` entries, the least recently used
// evicted first, each entry dropped once its own deadline passes. For verdicts that must not
// grow without bound under a flood of distinct keys (token and access reviews). Thread-safe.
#pragma once

#include <chrono>
#include <cstddef>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

namespace tollgate::util {

template <typename V, typename Clock = std::chrono::steady_clock>
class TtlCache {
 public:
  explicit TtlCache(std::size_t capacity) : capacity_(capacity == 0 ? 1 : capacity) {}

  // The value for `key` if present and not expired at `now` (and marks it recently used).
  std::optional<V> get(const std::string& key, typename Clock::time_point now = Clock::now()) {
    std::lock_guard lock(mu_);
    auto it = index_.find(key);
    if (it == index_.end()) return std::nullopt;
    if (it->second->expires <= now) {
      order_.erase(it->second);
      index_.erase(it);
      return std::nullopt;
    }
    order_.splice(order_.begin(), order_, it->second);
    return it->second->value;
  }

  // Stores `value` until `expires`, evicting the least recently used entry when full.
  void put(const std::string& key, V value, typename Clock::time_point expires) {
    std::lock_guard lock(mu_);
    if (auto it = index_.find(key); it != index_.end()) {
      it->second->value = std::move(value);
      it->second->expires = expires;
      order_.splice(order_.begin(), order_, it->second);
      return;
    }
    if (index_.size() >= capacity_) {
      index_.erase(order_.back().key);
      order_.pop_back();
    }
    order_.push_front(Entry{key, std::move(value), expires});
    index_.emplace(key, order_.begin());
  }

  std::size_t size() const {
    std::lock_guard lock(mu_);
    return index_.size();
  }
  std::size_t capacity() const { return capacity_; }

 private:
  struct Entry {
    std::string key;
    V value;
    typename Clock::time_point expires;
  };
  const std::size_t capacity_;
  mutable std::mutex mu_;
  std::list<Entry> order_;  // most recently used first; guarded by mu_
  std::unordered_map<std::string, typename std::list<Entry>::iterator> index_;  // guarded by mu_
};

}  // namespace tollgate::util

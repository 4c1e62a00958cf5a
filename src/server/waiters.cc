#include "tollgate/server/waiters.h"

namespace tollgate::server {

WaitList::WaitList(std::shared_ptr<const publish::Snapshot> first) {
  cell_.publish(std::move(first));
}

bool WaitList::park(const std::string& pod_key, std::string_view etag, std::shared_ptr<Waiter> w) {
  std::lock_guard lock(mu_);
  if (shutdown_) return false;
  const auto s = cell_.load();
  const auto slash = pod_key.find('/');
  const publish::PodEntry* e = s->find(std::string_view(pod_key).substr(0, slash),
                                       std::string_view(pod_key).substr(slash + 1));
  if (!s->synced || e == nullptr || e->table == nullptr || e->table->etag != etag) return false;
  const Waiter* key = w.get();
  if (by_pod_[pod_key].emplace(key, std::move(w)).second) ++parked_;
  return true;
}

bool WaitList::unpark(const std::string& pod_key, const Waiter* w) {
  std::lock_guard lock(mu_);
  auto it = by_pod_.find(pod_key);
  if (it == by_pod_.end() || it->second.erase(w) == 0) return false;
  --parked_;
  if (it->second.empty()) by_pod_.erase(it);
  return true;
}

void WaitList::publish(std::shared_ptr<const publish::Snapshot> s,
                       const std::vector<std::string>& changed) {
  std::vector<std::shared_ptr<Waiter>> woken;
  {
    std::lock_guard lock(mu_);
    cell_.publish(std::move(s));
    for (const auto& key : changed) {
      auto it = by_pod_.find(key);
      if (it == by_pod_.end()) continue;
      for (auto& [_, w] : it->second) woken.push_back(std::move(w));
      parked_ -= it->second.size();
      by_pod_.erase(it);
    }
  }
  for (const auto& w : woken) w->wake();
}

void WaitList::shutdown() {
  std::vector<std::shared_ptr<Waiter>> woken;
  {
    std::lock_guard lock(mu_);
    shutdown_ = true;
    for (auto& entry : by_pod_) {
      for (auto& waiter : entry.second) woken.push_back(std::move(waiter.second));
    }
    by_pod_.clear();
    parked_ = 0;
  }
  for (const auto& w : woken) w->wake();
}

bool WaitList::shutting_down() const {
  std::lock_guard lock(mu_);
  return shutdown_;
}

std::size_t WaitList::parked() const {
  std::lock_guard lock(mu_);
  return parked_;
}

}  // namespace tollgate::server

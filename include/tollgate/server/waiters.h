// Parked long-polls and the snapshot the service reads. The publish listener (index thread)
// swaps the snapshot and wakes the waiters of the pods whose table changed; HTTP threads park
// and unpark. Parking checks the ETag against the snapshot under the same lock the listener
// takes, so no publish is missed. Thread-safe.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tollgate/http/handler.h"
#include "tollgate/publish/snapshot.h"
#include "tollgate/util/snapshot_cell.h"

namespace tollgate::server {

// Something parked on a pod's table: a connection of the HTTP core, whose deferred answer
// wake() resumes. wake() is called without the list's lock held and only schedules work (it
// runs on the index thread or the thread calling shutdown()).
using Waiter = http::Waker;

class WaitList {
 public:
  explicit WaitList(std::shared_ptr<const publish::Snapshot> first);

  std::shared_ptr<const publish::Snapshot> snapshot() const { return cell_.load(); }

  // Parks `w` on `pod_key` ("ns/pod") if the current snapshot still gives that pod the table
  // `etag` and the list is not shut down. False: answer now (the table changed meanwhile).
  bool park(const std::string& pod_key, std::string_view etag, std::shared_ptr<Waiter> w);
  // Removes `w`; false if it was not parked (a wake-up is on its way, or it never parked).
  bool unpark(const std::string& pod_key, const Waiter* w);

  // Publishes `s` and wakes the waiters of `changed` pods.
  void publish(std::shared_ptr<const publish::Snapshot> s, const std::vector<std::string>& changed);
  // Wakes every waiter; park() refuses from now on.
  void shutdown();
  bool shutting_down() const;
  std::size_t parked() const;

 private:
  mutable std::mutex mu_;
  util::SnapshotCell<publish::Snapshot> cell_;
  std::unordered_map<std::string, std::unordered_map<const Waiter*, std::shared_ptr<Waiter>>>
      by_pod_;
  std::size_t parked_ = 0;
  bool shutdown_ = false;
};

}  // namespace tollgate::server

// The leader election loop: reads the coordination.k8s.io/v1 Lease every retry period and
// writes what the Elector decides (create, renew or take over), each update carrying the
// resourceVersion it read. Losing the lease (another holder seen, or no renewal within the
// renew deadline: an API server outage) demotes; it never ends the process. On stop() the
// leader first demotes (the callback stops the writers), then releases the Lease so that
// another replica takes over within about one retry period.
// run() on one thread; stop(), leading() and transitions() from any thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "tollgate/k8s/election.h"
#include "tollgate/k8s/transport.h"

namespace tollgate::k8s {

struct LeaderOptions {
  ElectionConfig election;
  std::string lease_namespace = "tollgate-system";
  std::string lease_name = "tollgate";
  // Called on the loop's thread when leadership starts (true) or ends (false); when it
  // returns false-side, nothing of the leader's may still be writing.
  std::function<void(bool leading)> on_change;
};

class LeaderLoop {
 public:
  LeaderLoop(LeaderOptions options, std::unique_ptr<Transport> transport);
  ~LeaderLoop();
  LeaderLoop(const LeaderLoop&) = delete;
  LeaderLoop& operator=(const LeaderLoop&) = delete;

  void run();   // until stop(); releases the Lease if held
  void stop();  // thread-safe; run() returns after the release (bounded by its timeout)
  bool stopped() const { return stopping_.load(); }
  bool leading() const { return leading_.load(); }
  std::uint64_t transitions() const { return transitions_.load(); }  // times it became leader
  std::uint64_t failures() const { return failures_.load(); }  // Lease reads/writes that failed

 private:
  enum class Step { kWait, kAgain };
  Step attempt();
  void set_leading(bool leading);
  void release();
  std::string lease_path() const;
  // The Lease as read: nullopt when there is none; an error when it cannot be read.
  util::Result<std::optional<ReadLease>> read();
  bool write(const LeaseRecord& record, const std::string& resource_version);

  LeaderOptions options_;
  std::unique_ptr<Transport> transport_;
  Elector elector_;
  std::atomic<bool> stopping_{false}, leading_{false};
  std::atomic<std::uint64_t> transitions_{0}, failures_{0};
  bool read_failing_ = false;  // the loop's: the last read failed (logged once per outage)
  std::mutex mu_;
  std::condition_variable cv_;
};

}  // namespace tollgate::k8s

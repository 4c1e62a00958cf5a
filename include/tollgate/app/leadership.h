// The controller's writing half, beside the watching and serving every replica does: the
// leader election loop and the status writer (with its Events), each on its own thread. Only
// the leader writes; leadership lost demotes, never exits. Without leader election the
// writer always writes (one replica). A thread that dies is reported to `failures`.
// start()/stop() from one thread; submit() and metrics() from any.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "tollgate/index/objects.h"
#include "tollgate/k8s/config.h"
#include "tollgate/k8s/leader.h"
#include "tollgate/status/writer.h"
#include "tollgate/util/thread_failure.h"

namespace tollgate::app {

struct LeadershipOptions {
  bool leader_elect = true;
  k8s::LeaderOptions leader;  // on_change is set by Leadership
  status::WriterOptions writer;
  util::ThreadFailures* failures = nullptr;
};

class Leadership {
 public:
  Leadership(k8s::ClusterConfig config, LeadershipOptions options);
  ~Leadership();
  Leadership(const Leadership&) = delete;
  Leadership& operator=(const Leadership&) = delete;

  util::Status start();
  // Demotes (the writer finishes its write in flight), releases the Lease, stops the threads.
  void stop();
  // A copy of a policy event for the status writer (others are ignored).
  void submit(const index::Event& e);
  // tollgate_leader, tollgate_leader_transitions_total, the writer's counters.
  std::string metrics() const;

 private:
  k8s::ClusterConfig config_;
  LeadershipOptions options_;
  std::unique_ptr<status::StatusWriter> writer_;
  std::unique_ptr<k8s::LeaderLoop> leader_;
  std::thread writer_thread_, leader_thread_;
};

}  // namespace tollgate::app

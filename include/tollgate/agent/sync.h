// Keeps the agent's table in step with the controller (docs/agent.md#keeping-the-table):
// long-polls GET /v1/tables/{ns}/{pod} with If-None-Match and Prefer: wait=N, verifies each
// new table (apiVersion, hash against content and ETag), activates it, then persists it in
// the state directory. On every failure it keeps the active table and backs off with jitter.
// When the first attempt fails and no table is active, the table saved in the state
// directory is restored (a file that cannot be used is reported, never fatal).
// One thread of its own (injection point "sync" for the thread-death tests); start() and stop()
// from one thread; status() from any.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "tollgate/agent/authorizer.h"
#include "tollgate/agent/metrics.h"
#include "tollgate/k8s/transport.h"
#include "tollgate/util/thread_failure.h"

namespace tollgate::agent {

struct SyncOptions {
  std::string namespace_, pod;
  std::string state_dir;           // empty: nothing persisted or restored
  std::chrono::seconds wait{300};  // Prefer: wait=N; the client timeout is N + 30 s
  // The first request, without wait: how long before the controller counts as unreachable
  // and the saved table is restored.
  std::chrono::milliseconds first_timeout{5000};
  std::chrono::duration<double> backoff_initial{0.2}, backoff_cap{30.0};
  // Where the sync thread reports that it ended unexpectedly (an exception); the agent then
  // drains and exits 1, to be restarted with the saved table. Not owned; may be null.
  util::ThreadFailures* failures = nullptr;
};

// What /readyz and the logs say about the sync.
struct SyncStatus {
  bool have_table = false;
  bool restored = false;       // the active table came from the state directory
  bool controller_ok = false;  // the last exchange with the controller succeeded
  std::string last_error;      // the last failure, for people
  std::string restore_error;   // why the saved table could not be used, if it could not
};

class Syncer {
 public:
  // `transport` talks to the controller; `authorizer` and `metrics` must outlive the Syncer.
  Syncer(SyncOptions options, std::unique_ptr<k8s::Transport> transport, Authorizer& authorizer,
         AgentMetrics& metrics);
  ~Syncer();  // stop()
  Syncer(const Syncer&) = delete;
  Syncer& operator=(const Syncer&) = delete;

  void start();
  // Aborts the long-poll in progress and joins the thread.
  void stop();
  SyncStatus status() const;

  // One exchange with the controller, as the loop does it (for tests): true when it
  // succeeded (200 verified and activated, or 304).
  bool sync_once(std::chrono::milliseconds timeout, bool wait);
  // Restores the saved table when no table is active; true when one was activated.
  bool restore();

 private:
  void run();
  void fail(SyncError kind, const std::string& message);
  bool accept(const k8s::ApiResponse& r);

  const SyncOptions options_;
  const std::string target_;
  std::unique_ptr<k8s::Transport> transport_;
  Authorizer& authorizer_;
  AgentMetrics& metrics_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // guarded by mu_
  SyncStatus status_;      // guarded by mu_
  std::string etag_;       // the sync thread's only
  std::thread thread_;
};

}  // namespace tollgate::agent

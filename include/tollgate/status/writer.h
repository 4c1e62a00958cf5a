// The status writer: keeps a Reconciler fed with the cluster source's policy events and, while
// this replica leads, makes each policy's object say what tollgate made of it — a JSON merge
// patch of status.conditions to the /status subresource, preconditioned on the
// resourceVersion read. A 409 re-reads the object and tries again (at most max_conflicts
// times), a 404 drops the write, a 422 is counted and not retried until the object changes,
// a 429, a 5xx or a connection error backs off. Events follow the conditions it writes:
// Warning when one turns False, Normal when it recovers.
// submit() and set_leading() from any thread; run() on its own thread until stop().
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "tollgate/index/objects.h"
#include "tollgate/k8s/transport.h"
#include "tollgate/status/events.h"
#include "tollgate/status/reconciler.h"
#include "tollgate/util/backoff.h"

namespace tollgate::status {

struct WriterOptions {
  policy::MeshConfig mesh;
  bool events = true;
  EventOptions event_options;
  int max_conflicts = 5;  // 409s in a row for one policy before backing off
  util::Backoff backoff{std::chrono::duration<double>(0.5), std::chrono::duration<double>(30)};
};

struct WriterStats {
  std::atomic<std::uint64_t> ok{0}, conflict{0}, not_found{0}, invalid{0}, error{0};
};

class StatusWriter {
 public:
  StatusWriter(WriterOptions options, std::unique_ptr<k8s::Transport> transport);
  ~StatusWriter();
  StatusWriter(const StatusWriter&) = delete;
  StatusWriter& operator=(const StatusWriter&) = delete;

  // A copy of a policy event from the cluster source (others are ignored).
  void submit(const index::Event& e);
  // Leadership changed. On false it returns once no write is in flight (none follows).
  void set_leading(bool leading);
  void run();
  void stop();
  bool stopped() const { return stopping_.load(); }

  const WriterStats& stats() const { return stats_; }
  // tollgate_status_writes_total and tollgate_events_total, in the text exposition format.
  std::string metrics() const;

 private:
  enum class Done { kYes, kLater };
  Done write(const std::string& key);
  Done reread(const std::string& key, const std::string& path);
  void record_events(const Plan& plan);
  void back_off(const k8s::ApiResponse* r);

  WriterOptions options_;
  std::unique_ptr<k8s::Transport> transport_;
  Reconciler reconciler_;  // the writer thread's
  EventRecorder recorder_;
  std::set<std::string> pending_;                // the writer thread's
  std::map<std::string, std::string> rejected_;  // key -> resourceVersion a 422 answered
  std::chrono::steady_clock::time_point retry_at_{};

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<index::Event> queue_;  // guarded by mu_
  bool leading_ = false;            // guarded by mu_
  bool became_leader_ = false;      // guarded by mu_
  std::atomic<bool> stopping_{false};
  std::mutex write_mu_;  // held while a write is in flight

  WriterStats stats_;
};

}  // namespace tollgate::status

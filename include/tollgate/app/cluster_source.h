// The cluster source: one Watcher per kind (AuthorizationPolicy v1 -> v1beta1, Pod,
// ServiceAccount, Namespace), each on its own thread, decoding objects and feeding the
// publisher's queue. A watcher thread that dies (an exception, or a return before stop()) is
// reported to `ClusterSourceOptions::failures`. start()/stop() from one thread; stats are
// thread-safe.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tollgate/index/objects.h"
#include "tollgate/k8s/config.h"
#include "tollgate/k8s/watcher.h"
#include "tollgate/util/thread_failure.h"

namespace tollgate::app {

struct ClusterSourceOptions {
  std::size_t page_size = 500;
  bool streaming_list = true;  // try sendInitialEvents first (k8s::WatcherOptions)
  std::chrono::milliseconds initial_events_idle{10000};
  int min_watch_timeout_seconds = 300;
  std::chrono::milliseconds idle_slack{30000};
  util::Backoff backoff{};
  util::ThreadFailures* failures = nullptr;  // told if a watcher thread dies; may be null
};

class ClusterSource {
 public:
  using Sink = std::function<bool(index::Event)>;
  ClusterSource(k8s::ClusterConfig config, Sink sink, ClusterSourceOptions options = {});
  ~ClusterSource();
  ClusterSource(const ClusterSource&) = delete;
  ClusterSource& operator=(const ClusterSource&) = delete;

  util::Status start();
  void stop();

  struct KindStats {
    std::string kind, path;
    std::uint64_t lists, relists, events, errors, bad_lines, bad_objects, list_bytes;
    std::uint64_t streaming_lists;  // lists that came as a streaming list
    bool streaming;                 // still asking for streaming lists (no fallback)
    k8s::WatcherState state;
  };
  std::vector<KindStats> stats() const;

 private:
  class Feed;
  k8s::ClusterConfig config_;
  Sink sink_;
  ClusterSourceOptions options_;
  std::shared_ptr<k8s::TokenSource> tokens_;
  std::vector<std::unique_ptr<Feed>> feeds_;
  std::vector<std::unique_ptr<k8s::Watcher>> watchers_;
  std::vector<std::thread> threads_;
};

}  // namespace tollgate::app

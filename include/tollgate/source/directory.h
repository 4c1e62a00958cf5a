// The manifest-directory source (the embedded default): files and directories of YAML/JSON
// read as if they were a cluster, re-read whenever they change (inotify, including the
// symlink swap a mounted ConfigMap does). It feeds the index the same events the API server
// watchers do: one complete Replace per kind after each read.
// The watch runs on its own thread; the sink must be thread-safe (the publisher's queue is).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "tollgate/index/objects.h"
#include "tollgate/source/manifests.h"

namespace tollgate::source {

// The four Replace events describing `state` (policies, pods, service accounts, namespaces).
std::vector<index::Event> replace_events(const ClusterState& state);

class DirectorySource {
 public:
  using Sink = std::function<bool(index::Event)>;
  DirectorySource(std::vector<std::string> paths, Sink sink);
  ~DirectorySource();
  DirectorySource(const DirectorySource&) = delete;
  DirectorySource& operator=(const DirectorySource&) = delete;

  // Reads every path now and sends the events; returns the problems found (also logged).
  std::vector<std::string> load();
  // load(), then watch the paths and reload after changes settle (`settle` of quiet).
  void start(std::chrono::milliseconds settle = std::chrono::milliseconds(50));
  void stop();
  std::uint64_t reloads() const { return reloads_.load(); }

 private:
  void watch_loop(std::chrono::milliseconds settle);
  void add_watches();

  std::vector<std::string> paths_;
  Sink sink_;
  std::map<std::string, std::vector<policy::Document>> last_good_;  // by file
  int inotify_fd_ = -1;
  int stop_fd_ = -1;  // eventfd that wakes the watch thread to stop
  std::thread thread_;
  std::atomic<std::uint64_t> reloads_{0};
};

}  // namespace tollgate::source

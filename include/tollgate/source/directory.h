// The manifest-directory source (the embedded default): files and directories of YAML/JSON
// read as if they were a cluster, and watched (inotify, including the symlink swap a mounted
// ConfigMap does). At start every file must read: until then each kind's health names the
// files that cannot be read and why, and nothing is listed (a manifest set missing a file is
// not the cluster; that file could hold the DENY policies). Once listed, a change re-reads the
// changed files only and sends the index what changed in them; a file that breaks keeps its
// last good content (its objects stay) and the health message says so.
// Where two files define the same object, the later file (in the order list_files gives)
// wins. The watch runs on its own thread; the sink must be thread-safe (the publisher's
// queue is). A watch thread that dies is reported to `DirectoryOptions::failures`.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "tollgate/index/objects.h"
#include "tollgate/source/manifests.h"
#include "tollgate/util/thread_failure.h"

namespace tollgate::source {

struct DirectoryOptions {
  ReadOptions read;
  std::chrono::milliseconds settle{20};      // re-read once the files have been quiet this long
  util::ThreadFailures* failures = nullptr;  // told if the watch thread dies; may be null
};

class DirectorySource {
 public:
  using Sink = std::function<bool(index::Event)>;
  DirectorySource(std::vector<std::string> paths, Sink sink, DirectoryOptions options = {});
  ~DirectorySource();
  DirectorySource(const DirectorySource&) = delete;
  DirectorySource& operator=(const DirectorySource&) = delete;

  // Reads every path now and sends the events; returns the problems found (also logged).
  std::vector<std::string> load();
  // load(), then watch the paths and re-read what changed once changes settle.
  void start();
  void stop();
  std::uint64_t reloads() const { return reloads_.load(); }        // reads done (load included)
  std::uint64_t files_read() const { return files_read_.load(); }  // files read, in total
  bool listed() const { return listed_.load(); }

 private:
  // What identifies a file's content without reading it.
  struct Identity {
    std::uint64_t dev = 0, ino = 0, size = 0;
    std::int64_t mtime_ns = 0, ctime_ns = 0;
    bool operator==(const Identity&) const = default;
  };
  static Identity identity_of(const std::string& path);
  struct FileState {
    std::size_t rank = 0;  // position in list_files order: a later file wins
    Identity identity;
    std::vector<std::string> keys[index::kKindCount];  // sorted object keys, per kind
    std::string error;                                 // why the last read failed
  };
  // Events under construction: per kind, objects to upsert and to delete.
  struct Batch {
    std::vector<index::Object> upserts[index::kKindCount], deletes[index::kKindCount];
  };

  void watch_loop();
  void add_watches();
  std::vector<std::string> load_all();  // before the first complete read
  std::vector<std::string> reload(const std::set<std::string>& hinted);
  void apply_file(const std::string& path, FileState& state, FileObjects objects, Batch& batch,
                  std::map<std::string, std::vector<std::pair<int, std::string>>>& fallback);
  void resolve_fallbacks(std::map<std::string, std::vector<std::pair<int, std::string>>>& fallback,
                         Batch& batch);
  bool defined_after(int kind, const std::string& key, std::size_t rank) const;
  const std::string* last_owner(int kind, const std::string& key, std::size_t rank) const;
  void send(Batch& batch);
  void report(const std::vector<std::string>& problems);

  std::vector<std::string> paths_;
  Sink sink_;
  DirectoryOptions options_;
  std::map<std::string, FileState> files_;  // by path; touched by load() and the watch thread
  // How many files define each key (a key's hash, per kind): most keys are in one file only,
  // and only the others need the files searched.
  std::unordered_map<std::uint64_t, std::uint32_t> defined_[index::kKindCount];
  std::mutex mu_;  // serializes load() and the watch thread's reloads
  std::unordered_map<int, std::string> watched_;  // inotify watch descriptor -> directory
  int inotify_fd_ = -1;
  int stop_fd_ = -1;  // eventfd that wakes the watch thread to stop
  std::thread thread_;
  std::atomic<std::uint64_t> reloads_{0}, files_read_{0};
  std::atomic<bool> listed_{false};
  std::string last_report_;
};

}  // namespace tollgate::source

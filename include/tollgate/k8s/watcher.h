// Watcher: client-go's reflector for one kind. Paginated list, then watch from the list's
// resourceVersion with bookmarks and a randomized timeout; 410 Expired (event or status) ->
// relist, whose complete result lets the handler drop what was deleted meanwhile; a dropped
// or stalled stream -> rewatch from the last version seen; 429 honours Retry-After; 5xx and
// network errors back off 0.8-30 s with jitter; 401/403 are logged loudly. A malformed line
// is logged, counted and skipped. One thread per watcher (run()); stop() is thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "tollgate/k8s/transport.h"
#include "tollgate/util/backoff.h"

namespace tollgate::k8s {

enum class EventType : std::uint8_t { kAdded, kModified, kDeleted };

// Receives what a watcher learns, on the watcher's thread. Object JSON views are valid only
// during the call.
class WatchHandler {
 public:
  virtual ~WatchHandler() = default;
  virtual void list_begin() = 0;                        // a (re)list starts
  virtual void list_item(std::string_view object) = 0;  // one item of it
  virtual void list_end() = 0;                          // complete: the state is exactly this
  virtual void event(EventType type, std::string_view object) = 0;
  virtual void health(bool healthy, const std::string& message) = 0;
};

struct WatcherOptions {
  std::string kind;                // for logs: "Pod"
  std::vector<std::string> paths;  // collection paths to try in order (404 -> the next)
  std::size_t page_size = 500;     // list `limit`
  int min_timeout_seconds = 300;   // watch timeoutSeconds is random in [min, 2*min)
  std::chrono::milliseconds request_timeout{60000};
  std::chrono::milliseconds idle_slack{
      30000};  // a watch silent beyond its timeout + this is stalled
  std::size_t max_list_page_bytes = 512u << 20;
  std::size_t max_event_bytes = 16u << 20;
  util::Backoff backoff{};
};

struct WatcherStats {
  std::atomic<std::uint64_t> lists{0}, relists{0}, watches{0}, events{0}, bookmarks{0}, errors{0},
      bad_lines{0}, expired{0}, list_bytes{0};
};

class Watcher {
 public:
  Watcher(WatcherOptions options, std::unique_ptr<Transport> transport, WatchHandler& handler);
  void run();   // until stop()
  void stop();  // thread-safe; run() returns promptly
  const WatcherStats& stats() const { return stats_; }
  std::string path() const;  // the collection path in use (after v1 -> v1beta1 fallback)
  std::string resource_version() const;

 private:
  enum class Outcome { kOk, kRelist, kRetry, kBackoff, kStopped };
  Outcome list();
  Outcome watch();
  Outcome classify(const HttpResponse& r, const std::string& what);
  void sleep_for(std::chrono::duration<double> d);
  void set_rv(std::string_view rv);

  WatcherOptions options_;
  std::unique_ptr<Transport> transport_;
  WatchHandler& handler_;
  WatcherStats stats_;
  std::size_t path_index_ = 0;
  std::string rv_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::atomic<bool> stopped_{false};
  std::chrono::duration<double> retry_after_{0};
  bool progress_ = false;  // the last watch delivered at least one line
};

}  // namespace tollgate::k8s

// Watcher: client-go's reflector for one kind, as an explicit state machine (as kube-rs's
// watcher is). The initial state comes from a streaming list (a watch with sendInitialEvents
// whose initial events end at a bookmark annotated k8s.io/initial-events-end) or, when the
// server refuses or ignores that, from a paginated list; then a watch from that state's
// resourceVersion with bookmarks and a randomized timeout. 410 Expired (event or status) ->
// list again, whose complete result lets the handler drop what was deleted meanwhile; a
// dropped or stalled stream -> watch again from the last version seen; 429 honours
// Retry-After; 5xx and network errors back off 0.8-30 s with jitter; 401/403 are logged
// loudly. A malformed line is logged, counted and skipped. One thread per watcher (run());
// stop(), state() and the stats are thread-safe.
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
  virtual void list_begin() = 0;                          // a (re)list starts
  virtual void list_item(std::string_view object) = 0;    // one item of it
  virtual void list_remove(std::string_view object) = 0;  // an item deleted before list_end
  virtual void list_end() = 0;                            // complete: the state is exactly this
  virtual void event(EventType type, std::string_view object) = 0;
  virtual void health(bool healthy, const std::string& message) = 0;
};

// Where a watcher is. kEmpty -> kStreaming -> kWatching (the streaming list's stream goes on
// as the watch), or kEmpty -> kListing -> kListed -> kWatching; a watch that ends leaves
// kListed, a 410 kEmpty.
enum class WatcherState : std::uint8_t {
  kEmpty,      // no complete state (at start, or after a 410): list next
  kListing,    // paginating a list
  kStreaming,  // a streaming list: receiving its initial events
  kListed,     // the complete state at resource_version() is known; watch next
  kWatching,   // a watch is open
};
const char* state_name(WatcherState s);

struct WatcherOptions {
  std::string kind;                // for logs: "Pod"
  std::vector<std::string> paths;  // collection paths to try in order (404 -> the next)
  std::size_t page_size = 500;     // list `limit`
  int min_timeout_seconds = 300;   // watch timeoutSeconds is random in [min, 2*min)
  std::chrono::milliseconds request_timeout{60000};
  std::chrono::milliseconds idle_slack{
      30000};  // a watch silent beyond its timeout + this is stalled
  // Ask for a streaming list first (kube-apiserver 1.32+ serves it). A server that answers
  // it with 400 or 422 (the feature off, or older than 1.27), or that ends or stays silent
  // for `initial_events_idle` without the bookmark ending its initial events (it ignored the
  // parameter), is listed in pages from then on.
  bool streaming_list = true;
  std::chrono::milliseconds initial_events_idle{10000};
  std::size_t max_list_page_bytes = 512u << 20;
  std::size_t max_event_bytes = 16u << 20;
  util::Backoff backoff{};
};

struct WatcherStats {
  std::atomic<std::uint64_t> lists{0}, relists{0}, watches{0}, events{0}, bookmarks{0}, errors{0},
      bad_lines{0}, expired{0}, list_bytes{0}, streaming_lists{0};
};

class Watcher {
 public:
  Watcher(WatcherOptions options, std::unique_ptr<Transport> transport, WatchHandler& handler);
  void run();                                       // until stop()
  void stop();                                      // thread-safe; run() returns promptly
  bool stopped() const { return stopped_.load(); }  // stop() was called
  const WatcherStats& stats() const { return stats_; }
  WatcherState state() const { return state_.load(); }
  bool streaming_list() const { return streaming_.load(); }  // false once it fell back
  std::string path() const;  // the collection path in use (after v1 -> v1beta1 fallback)
  std::string resource_version() const;

 private:
  enum class Outcome {
    kOk,       // listed, or a watch ended normally
    kRelist,   // 410: list again
    kAgain,    // go on at once (a path or protocol fallback)
    kRetry,    // 429: wait as asked
    kBackoff,  // an error: back off
    kStatus,   // (streams) a non-200 answer, for the caller to classify
    kStopped,
  };
  struct Stream;  // one watch stream's progress
  struct Pager;   // a paginated list's parser
  Outcome list();
  Outcome list_page(Pager& pager, const std::string& body, std::string& list_rv,
                    std::string& next_cont);
  Outcome stream_list();
  Outcome watch();
  Outcome run_stream(Stream& s, std::chrono::milliseconds first_idle);
  bool on_line(Stream& s, std::string_view line);
  Outcome classify(const ApiResponse& r, const std::string& what);
  bool next_path();  // after a 404: the next path to try, if any
  void report(bool healthy, const std::string& message);  // to the handler, on changes
  void sleep_for(std::chrono::duration<double> d);
  void set_rv(std::string_view rv);  // an empty version changes nothing
  void clear_rv();
  void set_state(WatcherState s) { state_ = s; }

  WatcherOptions options_;
  std::unique_ptr<Transport> transport_;
  WatchHandler& handler_;
  WatcherStats stats_;
  std::atomic<WatcherState> state_{WatcherState::kEmpty};
  std::atomic<bool> streaming_{true};
  std::size_t path_index_ = 0;
  std::string rv_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::atomic<bool> stopped_{false};
  std::chrono::duration<double> retry_after_{0};
  bool progress_ = false;  // the last watch delivered at least one line
  bool reported_ = false, healthy_ = false;
};

}  // namespace tollgate::k8s

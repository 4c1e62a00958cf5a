// core/v1 Events about AuthorizationPolicies, recorded as client-go's recorder does: a
// repeat of an event (same object, type, reason and message) patches the earlier Event's
// count and lastTimestamp instead of creating another object, and a token bucket per object
// (burst 25, one more every 5 minutes) bounds how many reach the API server. Best effort: a
// failed write is counted and logged, never retried. Not thread-safe: used by the status
// writer's thread; stats() from any.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <list>
#include <map>
#include <string>
#include <string_view>

#include "tollgate/k8s/transport.h"

namespace tollgate::status {

struct InvolvedObject {
  std::string api_version, kind, namespace_, name, uid;
};

struct EventOptions {
  std::string component = "tollgate";  // source.component and reportingComponent
  std::string instance;                // reportingInstance and source.host: the pod name
  double burst = 25;                   // client-go's EventSourceObjectSpamFilter
  std::chrono::seconds refill{300};    // one token per this
  std::size_t max_remembered = 4096;   // Events whose count a repeat bumps (oldest forgotten)
};

class EventRecorder {
 public:
  EventRecorder(k8s::Transport& transport, EventOptions options)
      : transport_(transport), options_(std::move(options)) {}

  enum class Outcome { kCreated, kPatched, kLimited, kFailed };
  // type: "Normal" or "Warning"; reason: CamelCase.
  Outcome record(const InvolvedObject& object, std::string_view type, std::string_view reason,
                 std::string_view message, std::chrono::system_clock::time_point now,
                 std::chrono::steady_clock::time_point mono);

  struct Stats {  // read from any thread
    std::atomic<std::uint64_t> created{0}, patched{0}, limited{0}, failed{0};
  };
  const Stats& stats() const { return stats_; }

 private:
  struct Known {
    std::string name;
    std::int64_t count = 1;
    std::list<std::string>::iterator order;
  };
  struct Bucket {
    double tokens = 0;
    std::chrono::steady_clock::time_point at;
  };
  bool take_token(const std::string& uid, std::chrono::steady_clock::time_point mono);
  Outcome create(const std::string& key, const InvolvedObject& object, std::string_view type,
                 std::string_view reason, std::string_view message,
                 std::chrono::system_clock::time_point now);
  void remember(const std::string& key, std::string name);

  k8s::Transport& transport_;
  EventOptions options_;
  std::map<std::string, Known> known_;  // by object uid, type, reason and message
  std::list<std::string> order_;        // keys of known_, oldest first
  std::map<std::string, Bucket> buckets_;
  Stats stats_;
};

}  // namespace tollgate::status

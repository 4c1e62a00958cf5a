// The agent's Prometheus metrics (docs/agent.md#metrics): decisions by outcome and deciding
// policy, decision latency, the active table's age, hash and source, sync outcomes and errors
// by kind. Recording is thread-safe and cheap (one uncontended lock or atomics per decision);
// render() may run concurrently with it.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

#include "tollgate/agent/authorizer.h"

namespace tollgate::agent {

// Why a sync attempt failed; each is a label value of tollgate_agent_sync_errors_total.
enum class SyncError : std::uint8_t {
  kUnreachable,   // no connection, a reset, a timeout
  kNotFound,      // 404: the controller does not know the pod (yet)
  kUnavailable,   // 503: the controller is not synced, or shutting down
  kServerError,   // another 5xx
  kRefused,       // 401 or 403: the controller does not accept this agent's token for the pod
  kUnexpected,    // any other status (400, ...)
  kInvalidTable,  // a 200 whose table fails verification
  kPersist,       // the table was activated but could not be written to --state-dir
};
inline constexpr std::size_t kSyncErrorKinds = 8;
std::string_view sync_error_name(SyncError e);

class AgentMetrics {
 public:
  // Decision latency buckets, seconds (the last is +Inf).
  static constexpr std::array<double, 12> kBuckets = {1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5,
                                                      1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3,   1e-2};

  // One answered request: counts it by decision and policy, and by X-Tollgate-Reason for the
  // denials no table decided; `elapsed` is mapping plus decision.
  void decided(const Answer& a, std::chrono::nanoseconds elapsed);
  void sync_error(SyncError e);
  void table_fetched() { fetched_.fetch_add(1, std::memory_order_relaxed); }
  void not_modified() { not_modified_.fetch_add(1, std::memory_order_relaxed); }
  // The controller's X-Tollgate-Synced-At from the latest 200 or 304 (or the restored file).
  void synced_at(std::chrono::system_clock::time_point t);
  // A server-level refusal (a malformed HTTP request the core answered itself).
  void http_refused(int status);

  // The Prometheus text exposition, with the active table from `authorizer`.
  std::string render(const Authorizer& authorizer, std::chrono::system_clock::time_point now) const;

  std::uint64_t decisions(bool allowed, const std::string& policy) const;
  std::uint64_t sync_errors(SyncError e) const;

 private:
  // render()'s parts, in the order they are exposed.
  void render_decisions(std::string& out) const;
  void render_latency(std::string& out) const;
  void render_table(std::string& out, const Authorizer& authorizer,
                    std::chrono::system_clock::time_point now) const;
  void render_sync(std::string& out) const;

  mutable std::mutex mu_;
  std::map<std::pair<bool, std::string>, std::uint64_t> decisions_;  // guarded by mu_
  std::map<std::string, std::uint64_t> reasons_;                     // guarded by mu_
  std::array<std::atomic<std::uint64_t>, kBuckets.size() + 1> buckets_{};
  std::atomic<std::uint64_t> latency_ns_{0}, latency_count_{0};
  std::array<std::atomic<std::uint64_t>, kSyncErrorKinds> sync_errors_{};
  std::atomic<std::uint64_t> fetched_{0}, not_modified_{0}, http_refused_{0};
  std::atomic<std::int64_t> synced_at_ms_{0};  // 0: never
};

}  // namespace tollgate::agent

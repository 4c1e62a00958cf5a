// Leader election on a coordination.k8s.io/v1 Lease with client-go's semantics, as pure
// decisions (the loop that reads and writes the Lease lives elsewhere): a candidate takes
// over only after the record has stayed unchanged for the lease duration by its own clock;
// the holder keeps its acquireTime and the transition count; a takeover counts one more
// transition; a release empties holderIdentity so the next candidate takes over at once.
// Every write carries the resourceVersion it read, so that racing candidates get 409.
// Not thread-safe: one Elector per candidate, used by its election thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "tollgate/util/result.h"

namespace tollgate::k8s {

struct LeaseRecord {
  std::string holder;
  std::int64_t lease_duration_seconds = 0;
  std::string acquire_time, renew_time;  // RFC 3339 with microseconds (MicroTime)
  std::int64_t transitions = 0;
  bool operator==(const LeaseRecord&) const = default;
};

struct ElectionConfig {
  std::string identity;                             // the pod name (downward API)
  std::chrono::milliseconds lease_duration{15000};  // written in whole seconds, rounded up
  std::chrono::milliseconds renew_deadline{10000};
  std::chrono::milliseconds retry_period{2000};
};

// A Lease object's spec, and its metadata.resourceVersion; errors name the field.
struct ReadLease {
  LeaseRecord record;
  std::string resource_version;
};
util::Result<ReadLease> parse_lease(const nlohmann::json& lease);
// The Lease object (for a create, without resourceVersion) or the update (with it).
nlohmann::json lease_object(const std::string& ns, const std::string& name,
                            const LeaseRecord& record, const std::string& resource_version);
// MicroTime: "2026-12-02T10:00:00.123456Z".
std::string micro_time(std::chrono::system_clock::time_point t);

class Elector {
 public:
  using Steady = std::chrono::steady_clock;
  explicit Elector(ElectionConfig config) : config_(std::move(config)) {}

  // What to write after reading the Lease at `now` (nullopt lease: none exists): the record
  // to create or update, or nullopt to wait (another holder's lease has not expired by our
  // clock). `wall` stamps the times written.
  std::optional<LeaseRecord> next(const std::optional<LeaseRecord>& lease, Steady::time_point now,
                                  std::chrono::system_clock::time_point wall);
  // The record that gives the lease up (holderIdentity empty), when we hold `lease`.
  std::optional<LeaseRecord> release(const LeaseRecord& lease,
                                     std::chrono::system_clock::time_point wall) const;

  // A write of ours succeeded at `now` (we are, or stay, the leader).
  void renewed(Steady::time_point now) { last_renew_ = now; }
  // Are we still the leader at `now`: renewed within the renew deadline?
  bool leading(Steady::time_point now) const {
    return last_renew_ && now - *last_renew_ < config_.renew_deadline;
  }
  void lost() { last_renew_.reset(); }
  // After next() answered nullopt: when another holder's lease expires by our clock (a
  // candidate need not wait a whole retry period past it).
  Steady::time_point expires_at() const { return expires_at_; }
  const ElectionConfig& config() const { return config_; }

 private:
  ElectionConfig config_;
  std::optional<LeaseRecord> observed_;
  Steady::time_point observed_at_{};
  Steady::time_point expires_at_{};
  std::optional<Steady::time_point> last_renew_;
};

}  // namespace tollgate::k8s

// Metrics for the decision service (prometheus-cpp core, text exposition). count_request() is
// called from the HTTP threads, on_publish() from the index thread, render() from any thread;
// every method is thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tollgate/auth/reviewer.h"

#include "tollgate/publish/publisher.h"

namespace tollgate::server {

// The endpoints, as requests are counted.
enum class Endpoint : std::uint8_t {
  kTable,
  kTableByIp,
  kCheck,
  kWorkloads,
  kPolicy,
  kHealthz,
  kReadyz,
  kMetrics,
  kOther,
};
inline constexpr int kEndpointCount = 9;
const char* endpoint_name(Endpoint e);

// One watched kind's counters (from app::ClusterSource::stats()).
struct SourceStats {
  std::string kind;
  std::uint64_t events = 0, errors = 0, relists = 0;
};

// What render() reports besides the counters it keeps itself.
struct MetricsState {
  const publish::Snapshot* snapshot = nullptr;
  std::size_t parked = 0, connections = 0;
  std::vector<SourceStats> sources;
  std::optional<auth::Reviewer::Stats> reviews;  // --auth kubernetes
  std::string extra;                             // appended as it is
};

class Metrics {
 public:
  Metrics();
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  void count_request(Endpoint e, int status);
  void on_publish(const publish::PublisherStats& stats);
  std::string render(const MetricsState& state);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tollgate::server

#include "tollgate/server/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <array>
#include <map>
#include <mutex>

#include "tollgate/util/metrics_text.h"

namespace tollgate::server {

const char* endpoint_name(Endpoint e) {
  static constexpr const char* kNames[kEndpointCount] = {"table",     "table_by_ip", "check",
                                                         "workloads", "policy",      "healthz",
                                                         "readyz",    "metrics",     "other"};
  return kNames[static_cast<int>(e)];
}

namespace {
// Status codes the service answers with, in the order of the cache below.
constexpr std::array<int, 12> kCodes = {200, 304, 400, 401, 403, 404, 405, 413, 429, 500, 503, 0};

std::size_t code_slot(int status) {
  for (std::size_t i = 0; i + 1 < kCodes.size(); ++i) {
    if (kCodes[i] == status) return i;
  }
  return kCodes.size() - 1;  // "other"
}
}  // namespace

struct Metrics::Impl {
  prometheus::Registry registry;
  prometheus::Family<prometheus::Counter>& requests =
      prometheus::BuildCounter()
          .Name("tollgate_http_requests_total")
          .Help("HTTP requests answered, by endpoint and status code")
          .Register(registry);
  // Series are created on first use; the pointers are cached per endpoint and code.
  std::array<std::array<std::atomic<prometheus::Counter*>, kCodes.size()>, kEndpointCount>
      request_cache{};
  std::mutex requests_mu;

  prometheus::Gauge& parked = prometheus::BuildGauge()
                                  .Name("tollgate_parked_long_polls")
                                  .Help("Table requests parked waiting for a change")
                                  .Register(registry)
                                  .Add({});
  prometheus::Gauge& connections = prometheus::BuildGauge()
                                       .Name("tollgate_http_connections")
                                       .Help("Open HTTP connections")
                                       .Register(registry)
                                       .Add({});
  prometheus::Counter& publishes = prometheus::BuildCounter()
                                       .Name("tollgate_snapshot_publishes_total")
                                       .Help("Snapshots published")
                                       .Register(registry)
                                       .Add({});
  prometheus::Counter& compiled = prometheus::BuildCounter()
                                      .Name("tollgate_tables_compiled_total")
                                      .Help("Decision tables compiled")
                                      .Register(registry)
                                      .Add({});
  prometheus::Histogram& build_seconds =
      prometheus::BuildHistogram()
          .Name("tollgate_snapshot_build_seconds")
          .Help("Time to compile and build one snapshot")
          .Register(registry)
          .Add({}, prometheus::Histogram::BucketBoundaries{0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05,
                                                           0.1, 0.5, 1, 5});
  prometheus::Gauge& tables = prometheus::BuildGauge()
                                  .Name("tollgate_tables")
                                  .Help("Distinct decision tables in the current snapshot")
                                  .Register(registry)
                                  .Add({});
  prometheus::Gauge& workloads = prometheus::BuildGauge()
                                     .Name("tollgate_workloads")
                                     .Help("Pods (workloads) in the current snapshot")
                                     .Register(registry)
                                     .Add({});
  prometheus::Gauge& revision = prometheus::BuildGauge()
                                    .Name("tollgate_snapshot_revision")
                                    .Help("Revision of the current snapshot")
                                    .Register(registry)
                                    .Add({});
  prometheus::Gauge& since_sync =
      prometheus::BuildGauge()
          .Name("tollgate_seconds_since_last_sync")
          .Help(
              "Seconds since the data was last known fresh (every source healthy); -1 before "
              "the first full sync")
          .Register(registry)
          .Add({});
  prometheus::Family<prometheus::Counter>& watch_events =
      prometheus::BuildCounter()
          .Name("tollgate_watch_events_total")
          .Help("Watch events received, by kind")
          .Register(registry);
  prometheus::Family<prometheus::Counter>& watch_errors = prometheus::BuildCounter()
                                                              .Name("tollgate_watch_errors_total")
                                                              .Help("Watch errors, by kind")
                                                              .Register(registry);
  prometheus::Family<prometheus::Counter>& relists = prometheus::BuildCounter()
                                                         .Name("tollgate_watch_relists_total")
                                                         .Help("Relists, by kind")
                                                         .Register(registry);

  std::mutex mu;  // publish deltas and source deltas
  std::uint64_t last_publishes = 0, last_compiled = 0;
  std::map<std::string, SourceStats> last_sources;
};

Metrics::Metrics() : impl_(std::make_unique<Impl>()) {}
Metrics::~Metrics() = default;

void Metrics::count_request(Endpoint e, int status) {
  auto& slot = impl_->request_cache[static_cast<int>(e)][code_slot(status)];
  prometheus::Counter* c = slot.load(std::memory_order_acquire);
  if (c == nullptr) {
    std::lock_guard lock(impl_->requests_mu);
    const std::size_t i = code_slot(status);
    c = &impl_->requests.Add({{"endpoint", endpoint_name(e)},
                              {"code", kCodes[i] == 0 ? "other" : std::to_string(kCodes[i])}});
    slot.store(c, std::memory_order_release);
  }
  c->Increment();
}

void Metrics::on_publish(const publish::PublisherStats& stats) {
  std::lock_guard lock(impl_->mu);
  if (stats.publishes > impl_->last_publishes) {
    impl_->publishes.Increment(static_cast<double>(stats.publishes - impl_->last_publishes));
    impl_->last_publishes = stats.publishes;
  }
  if (stats.tables_compiled > impl_->last_compiled) {
    impl_->compiled.Increment(static_cast<double>(stats.tables_compiled - impl_->last_compiled));
    impl_->last_compiled = stats.tables_compiled;
  }
  impl_->build_seconds.Observe(stats.last_build_seconds);
}

namespace {

// --auth kubernetes: the reviews asked of the API server and how requests were spared them.
void render_reviews(const auth::Reviewer::Stats& r, std::string& out) {
  const auto counter = [&out](const char* name, const char* help, const char* labels,
                              std::uint64_t value, bool first) {
    if (first) util::append_metric_header(out, name, "counter", help);
    out += name;
    out += labels;
    out += ' ' + std::to_string(value) + '\n';
  };
  const char* reviews = "tollgate_auth_reviews_total";
  const char* help =
      "Reviews asked of the API server, by kind (token: TokenReview; access: "
      "SubjectAccessReview)";
  counter(reviews, help, "{kind=\"token\"}", r.token_reviews, true);
  counter(reviews, help, "{kind=\"access\"}", r.access_reviews, false);
  counter("tollgate_auth_review_failures_total",
          "Reviews the API server could not answer (the requests got 503)", "", r.failures, true);
  counter("tollgate_auth_rate_limited_total",
          "Reviews not asked because of the review rate limit (the requests got 503)", "",
          r.rate_limited, true);
  counter("tollgate_auth_cache_hits_total", "Requests decided from a cached verdict", "",
          r.cache_hits, true);
  counter("tollgate_auth_coalesced_total",
          "Token reviews shared with a concurrent request for the same token", "", r.coalesced,
          true);
}

}  // namespace

std::string Metrics::render(const MetricsState& state) {
  {
    std::lock_guard lock(impl_->mu);
    impl_->parked.Set(static_cast<double>(state.parked));
    impl_->connections.Set(static_cast<double>(state.connections));
    if (state.snapshot != nullptr) {
      const auto& s = *state.snapshot;
      impl_->tables.Set(static_cast<double>(s.tables));
      impl_->workloads.Set(static_cast<double>(s.pods));
      impl_->revision.Set(static_cast<double>(s.revision));
      const auto now = std::chrono::system_clock::now();
      impl_->since_sync.Set(
          s.synced ? std::chrono::duration<double>(now - s.fresh_as_of(now)).count() : -1.0);
    }
    for (const auto& st : state.sources) {
      auto& last = impl_->last_sources[st.kind];
      const prometheus::Labels labels{{"kind", st.kind}};
      auto bump = [&](prometheus::Family<prometheus::Counter>& f, std::uint64_t now,
                      std::uint64_t& before) {
        auto& c = f.Add(labels);
        if (now > before) c.Increment(static_cast<double>(now - before));
        before = now;
      };
      bump(impl_->watch_events, st.events, last.events);
      bump(impl_->watch_errors, st.errors, last.errors);
      bump(impl_->relists, st.relists, last.relists);
    }
  }
  const prometheus::TextSerializer serializer;
  std::string out = serializer.Serialize(impl_->registry.Collect());
  if (state.reviews) render_reviews(*state.reviews, out);
  out += state.extra;
  return out;
}

}  // namespace tollgate::server

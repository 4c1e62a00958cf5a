// Leader election between two `tollgate run` replicas on the fake API server's Lease
// (src/k8s/leader.cc): one holder; the follower only reads; SIGKILL and SIGTERM hand-overs
// within their bounds; a deleted Lease; an API server outage demotes without stopping either
// replica from serving; both serve the same bytes.
#include <catch2/catch.hpp>

#include "support/controller.h"
#include "tollgate/util/time.h"

namespace tollgate {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::deadline;
using testing::FakeApiServer;
using testing::kPolicies;
using testing::Replica;

// The election timings the replicas run with (seconds).
constexpr double kLease = 3, kRenew = 2, kRetry = 0.5;

double seconds_between(const std::string& from, const std::string& to) {
  const auto a = util::parse_rfc3339(from), b = util::parse_rfc3339(to);
  REQUIRE(a);
  REQUIRE(b);
  return std::chrono::duration<double>(*b - *a).count();
}

std::string holder(const FakeApiServer& api) {
  const json spec = testing::lease_spec(api);
  return spec.is_object() ? spec.value("holderIdentity", "") : "";
}

// `a` first, until it leads; then `b`, until it reports itself a follower.
void start_leader_then_follower(Replica& a, Replica& b) {
  REQUIRE(a.start({}, kLease, kRenew, kRetry));
  REQUIRE(testing::eventually([&] { return a.leading(); }, deadline(30s)));
  REQUIRE(b.start({}, kLease, kRenew, kRetry));
  REQUIRE(testing::eventually([&] { return b.metric("tollgate_leader") == 0; }, deadline(30s)));
}

bool exactly_one_leader(const Replica& a, const Replica& b) { return a.leading() != b.leading(); }

TEST_CASE("two replicas: one leader, the follower only reads, both serve identical tables") {
  FakeApiServer api;
  testing::add_cluster_collections(api);
  api.upsert(testing::kPods, testing::pod("backend-1"));
  api.upsert(kPolicies, testing::allow_policy("allow"));
  testing::TempDir d;
  Replica a(api, d, "tollgate-a"), b(api, d, "tollgate-b");
  REQUIRE(a.start({}, kLease, kRenew, kRetry));
  REQUIRE(testing::eventually([&] { return holder(api) == "tollgate-a" && a.leading(); },
                              deadline(30s)));
  REQUIRE(b.start({}, kLease, kRenew, kRetry));
  REQUIRE(testing::wait_for_status_writes(api, "allow", 1, deadline(30s)));
  // The follower reads the Lease a few times and never takes it.
  const auto reads_of_b = [&] {
    std::size_t n = 0;
    for (const auto& r : api.requests()) {
      n += r.authorization == b.authorization() && r.target.find("/leases/") != std::string::npos;
    }
    return n;
  };
  REQUIRE(testing::eventually([&] { return reads_of_b() >= 4; }, deadline(30s)));
  CHECK(a.leading());
  CHECK_FALSE(b.leading());
  CHECK(holder(api) == "tollgate-a");
  for (const auto& r : api.requests()) {
    if (r.authorization == b.authorization()) {
      INFO(r.method << " " << r.target);
      CHECK(r.method == "GET");
    }
  }
  // The same cluster, the same bytes: table and ETag.
  std::optional<testing::HttpReply> ta, tb;
  REQUIRE(testing::eventually(
      [&] {
        ta = testing::http_get(a.port(), "/v1/tables/default/backend-1");
        tb = testing::http_get(b.port(), "/v1/tables/default/backend-1");
        return ta && tb && ta->status == 200 && tb->status == 200;
      },
      deadline(30s)));
  CHECK(ta->body == tb->body);
  CHECK(testing::header_of(ta->headers, "etag") == testing::header_of(tb->headers, "etag"));
  CHECK_FALSE(testing::header_of(ta->headers, "etag").empty());
  CHECK(a.stop() == 0);
  CHECK(b.stop() == 0);
}

TEST_CASE("SIGKILL of the leader: the other takes over and writes within lease + 1.2 x retry") {
  FakeApiServer api;
  testing::add_cluster_collections(api);
  testing::TempDir d;
  Replica a(api, d, "tollgate-a"), b(api, d, "tollgate-b");
  start_leader_then_follower(a, b);
  const json before = testing::lease_spec(api);
  a.stop(SIGKILL);
  const std::string last_renewal = testing::lease_spec(api)["renewTime"];
  // Work for the new leader: a policy created right after the kill.
  api.upsert(kPolicies, testing::allow_policy("after-kill"));
  REQUIRE(testing::wait_for_status_writes(api, "after-kill", 1, deadline(30s)));
  const std::string written = util::rfc3339(std::chrono::system_clock::now());
  const json after = testing::lease_spec(api);
  CHECK(after["holderIdentity"] == "tollgate-b");
  CHECK(after["leaseTransitions"] == before["leaseTransitions"].get<int>() + 1);
  const double takeover = seconds_between(last_renewal, after["acquireTime"]);
  const double write = seconds_between(last_renewal, written);
  // The bound of the issue; sanitizer builds get their slowness on top.
  const double bound = kLease + 1.2 * kRetry + (testing::kTimeScale - 1) * 0.5;
  // The figures, for docs/operations.md and the closing notes.
  WARN("SIGKILL: takeover " << takeover << " s, status write " << write
                            << " s after the last renewal (bound " << bound << " s)");
  CHECK(takeover <= bound);
  CHECK(write <= bound);
  CHECK(takeover >= kLease - 0.05);  // not before the lease could have expired
  INFO(b.log());
  CHECK(b.stop() == 0);
}

TEST_CASE("SIGTERM of the leader hands over within about one retry period") {
  FakeApiServer api;
  testing::add_cluster_collections(api);
  testing::TempDir d;
  Replica a(api, d, "tollgate-a"), b(api, d, "tollgate-b");
  start_leader_then_follower(a, b);
  const json before = testing::lease_spec(api);
  CHECK(a.stop(SIGTERM) == 0);
  const json released = testing::lease_spec(api);
  CHECK(released["holderIdentity"] == "");  // released before exiting
  REQUIRE(testing::eventually([&] { return holder(api) == "tollgate-b"; }, deadline(30s)));
  const json after = testing::lease_spec(api);
  const double handover = seconds_between(released["renewTime"], after["acquireTime"]);
  WARN("SIGTERM: hand-over " << handover << " s after the release");
  CHECK(handover <= 1.2 * kRetry + (testing::kTimeScale - 1) * 0.5);
  CHECK(after["leaseTransitions"] == before["leaseTransitions"].get<int>() + 1);
  REQUIRE(testing::eventually([&] { return b.leading(); }, deadline(30s)));
  CHECK(b.stop() == 0);
}

TEST_CASE("a deleted Lease: exactly one leader again") {
  FakeApiServer api;
  testing::add_cluster_collections(api);
  testing::TempDir d;
  Replica a(api, d, "tollgate-a"), b(api, d, "tollgate-b");
  REQUIRE(a.start({}, kLease, kRenew, kRetry));
  REQUIRE(b.start({}, kLease, kRenew, kRetry));
  REQUIRE(testing::eventually([&] { return exactly_one_leader(a, b); }, deadline(30s)));
  api.remove(testing::kLeases, testing::kLeaseNamespace, "tollgate");
  REQUIRE(testing::eventually([&] { return !holder(api).empty(); }, deadline(30s)));
  // Settled: for several retry periods, one leader, the Lease's holder.
  int steady = 0;
  REQUIRE(testing::eventually(
      [&] {
        const bool one =
            exactly_one_leader(a, b) && holder(api) == (a.leading() ? a.identity() : b.identity());
        steady = one ? steady + 1 : 0;
        return steady >= 50;
      },
      deadline(60s)));
  api.upsert(kPolicies, testing::allow_policy("after-delete"));
  REQUIRE(testing::wait_for_status_writes(api, "after-delete", 1, deadline(30s)));
  CHECK(testing::status_writes(api, "after-delete") == 1);
  CHECK(a.stop() == 0);
  CHECK(b.stop() == 0);
}

TEST_CASE("an API server outage demotes the leader; both keep serving; status reconciles after") {
  // 30 s as the issue asks; 12 s under the sanitizers.
  const auto outage = testing::scenario_seconds("TOLLGATE_OUTAGE_SECONDS", 30, 12);
  FakeApiServer api;
  testing::add_cluster_collections(api);
  api.upsert(testing::kPods, testing::pod("backend-1"));
  api.upsert(kPolicies, testing::allow_policy("allow"));
  testing::TempDir d;
  Replica a(api, d, "tollgate-a"), b(api, d, "tollgate-b");
  REQUIRE(a.start({}, kLease, kRenew, kRetry));
  REQUIRE(testing::eventually([&] { return a.leading(); }, deadline(30s)));
  REQUIRE(b.start({}, kLease, kRenew, kRetry));
  REQUIRE(testing::wait_for_status_writes(api, "allow", 1, deadline(30s)));
  REQUIRE(testing::eventually(
      [&] {
        auto r = testing::http_get(b.port(), "/v1/tables/default/backend-1");
        return r && r->status == 200;
      },
      deadline(30s)));

  api.set_unavailable(503);
  const auto start = std::chrono::steady_clock::now();
  // Created during the outage: nobody can see it until the API server is back.
  api.upsert(kPolicies, testing::allow_policy("during"));
  REQUIRE(testing::eventually([&] { return !a.leading() && !b.leading(); }, deadline(30s)));
  const std::size_t writes_at_demotion = api.writes().size();
  while (std::chrono::steady_clock::now() < start + outage) {
    for (const Replica* r : {&a, &b}) {
      auto t = testing::http_get(r->port(), "/v1/tables/default/backend-1");
      REQUIRE(t);
      CHECK(t->status == 200);  // every replica keeps serving its last tables
      auto health = testing::http_get(r->port(), "/healthz");
      REQUIRE(health);
      CHECK(health->status == 200);
    }
    std::this_thread::sleep_for(1s);  // the outage's own length, not a wait for an event
  }
  // No write was even attempted once demoted (the Lease is only read).
  CHECK(api.writes().size() == writes_at_demotion);
  CHECK(a.metric("tollgate_leader") == 0);
  CHECK(b.metric("tollgate_leader") == 0);
  api.set_unavailable(0);

  REQUIRE(testing::wait_for_status_writes(api, "during", 1, deadline(60s)));
  REQUIRE(testing::eventually([&] { return exactly_one_leader(a, b); }, deadline(30s)));
  CHECK(testing::status_writes(api, "during") == 1);
  CHECK(testing::status_writes(api, "allow") == 1);  // reconciled, nothing to change
  INFO(a.log());
  CHECK(a.stop() == 0);
  CHECK(b.stop() == 0);
}

}  // namespace
}  // namespace tollgate

// The controller's reviews against the fake API server's TokenReview and SubjectAccessReview
// (src/auth/reviewer.cc): verdicts, caching, coalescing, rate limits and failures.
#include "tollgate/auth/reviewer.h"

#include <catch2/catch.hpp>
#include <thread>

#include "support/fake_apiserver.h"
#include "tollgate/k8s/config.h"

using namespace tollgate;
using namespace std::chrono_literals;

namespace {

struct Rig {
  testing::FakeApiServer api;
  std::unique_ptr<auth::Reviewer> reviewer;

  explicit Rig(auth::ReviewerOptions o = {}) {
    k8s::ClusterConfig c;
    c.server = api.url();
    auto parsed = k8s::parse_server(c);
    REQUIRE(parsed.ok());
    reviewer = std::make_unique<auth::Reviewer>(
        [cfg = *parsed] { return k8s::make_transport(cfg, nullptr); }, o);
    api.reviews().add_token("pod-token",
                            testing::pod_token("shop", "web", "web-1", "uid-1", {"tollgate"}));
    auto wrong = testing::pod_token("shop", "web", "web-1", "uid-1", {"https://kubernetes"});
    api.reviews().add_token("api-token", wrong);
    auto expired = testing::pod_token("shop", "web", "web-1", "uid-1", {"tollgate"});
    expired.expired = true;
    api.reviews().add_token("expired-token", expired);
  }
};

}  // namespace

TEST_CASE("a pod's projected token is reviewed once and its identity cached") {
  Rig rig;
  for (int i = 0; i < 3; ++i) {
    const auto v = rig.reviewer->review_token("pod-token");
    REQUIRE(v.outcome == auth::Outcome::kOk);
    REQUIRE(v.identity != nullptr);
    CHECK(v.identity->pod_name == "web-1");
    CHECK(v.identity->pod_uid == "uid-1");
    CHECK(v.identity->sa_name == "web");
  }
  CHECK(rig.api.reviews().token_reviews() == 1);
  CHECK(rig.reviewer->stats().cache_hits == 2);
}

TEST_CASE("garbage, expired and wrong-audience tokens are refused, naming no token") {
  Rig rig;
  for (const char* token : {"garbage", "expired-token", "api-token"}) {
    INFO(token);
    const auto v = rig.reviewer->review_token(token);
    CHECK(v.outcome == auth::Outcome::kRefused);
    CHECK(v.reason.find(token) == std::string::npos);
  }
  CHECK_THAT(rig.reviewer->review_token("expired-token").reason, Catch::Contains("expired"));
  CHECK(rig.reviewer->review_token("").outcome == auth::Outcome::kRefused);
}

TEST_CASE("when the API server cannot answer, the verdict is unavailable and not kept") {
  auth::ReviewerOptions o;
  o.timeout = 500ms;
  Rig rig(o);
  rig.api.reviews().fail_next(1);
  CHECK(rig.reviewer->review_token("pod-token").outcome == auth::Outcome::kUnavailable);
  CHECK(rig.reviewer->review_token("pod-token").outcome == auth::Outcome::kOk);  // asked again
  rig.api.reviews().stall_next(1, 3000ms);
  const auto stalled = rig.reviewer->review_token("other-token");
  CHECK(stalled.outcome == auth::Outcome::kUnavailable);
  CHECK_THAT(stalled.reason, Catch::Contains("cannot review"));
  CHECK(rig.reviewer->review_token("pod-token").outcome == auth::Outcome::kOk);  // cached
}

TEST_CASE("concurrent reviews of one token share one request") {
  Rig rig;
  rig.api.reviews().stall_next(1, 300ms);
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      if (rig.reviewer->review_token("pod-token").outcome == auth::Outcome::kOk) ++ok;
    });
  }
  for (auto& t : threads) t.join();
  CHECK(ok == 8);
  CHECK(rig.api.reviews().token_reviews() == 1);
}

TEST_CASE("a flood of distinct bogus tokens is rate-limited and the cache stays bounded") {
  auth::ReviewerOptions o;
  o.capacity = 100;
  o.reviews_per_second = 20;
  o.burst = 40;
  Rig rig(o);
  const auto t0 = std::chrono::steady_clock::now();
  int unavailable = 0;
  for (int i = 0; i < 10000; ++i) {
    const auto v = rig.reviewer->review_token("bogus-" + std::to_string(i));
    CHECK(v.outcome != auth::Outcome::kOk);
    unavailable += v.outcome == auth::Outcome::kUnavailable ? 1 : 0;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto reviews = rig.api.reviews().token_reviews();
  CHECK(reviews <= static_cast<std::size_t>(40 + 20 * seconds + 1));
  CHECK(unavailable >= 10000 - static_cast<int>(reviews));
  // The legitimate token still gets through once the bucket refills.
  bool ok = false;
  for (const auto deadline = std::chrono::steady_clock::now() + 30s;
       !ok && std::chrono::steady_clock::now() < deadline; std::this_thread::sleep_for(20ms)) {
    ok = rig.reviewer->review_token("pod-token").outcome == auth::Outcome::kOk;
  }
  CHECK(ok);
}

TEST_CASE("operators may ask what they may already list: namespaced and cluster-wide") {
  Rig rig;
  rig.api.reviews().allow("alice", "list", "security.istio.io", "authorizationpolicies", "shop");
  rig.api.reviews().allow("sre", "list", "security.istio.io", "authorizationpolicies", "");
  auth::Identity alice;
  alice.username = "alice";
  auth::Identity bob;
  bob.username = "bob";
  bob.groups = {"sre"};
  CHECK(rig.reviewer->may_list_policies(alice, "shop").outcome == auth::Outcome::kOk);
  const auto wide = rig.reviewer->may_list_policies(alice, "");
  CHECK(wide.outcome == auth::Outcome::kRefused);
  CHECK_THAT(wide.reason, Catch::Contains("cluster-wide"));
  CHECK(rig.reviewer->may_list_policies(alice, "other").outcome == auth::Outcome::kRefused);
  CHECK(rig.reviewer->may_list_policies(bob, "").outcome == auth::Outcome::kOk);  // by group
  CHECK(rig.reviewer->may_list_policies(bob, "shop").outcome == auth::Outcome::kOk);
  const auto asked = rig.api.reviews().access_reviews();
  CHECK(rig.reviewer->may_list_policies(alice, "shop").outcome == auth::Outcome::kOk);
  CHECK(rig.api.reviews().access_reviews() == asked);  // cached
  rig.api.reviews().fail_next(1);
  CHECK(rig.reviewer->may_list_policies(alice, "elsewhere").outcome == auth::Outcome::kUnavailable);
}

TEST_CASE("a JWT's expiry bounds its cached verdict; other tokens have none") {
  // {"alg":"none"}.{"exp":1796205600}.sig
  const auto exp = auth::jwt_expiry("eyJhbGciOiJub25lIn0.eyJleHAiOjE3OTYyMDU2MDB9.c2ln");
  REQUIRE(exp);
  CHECK(std::chrono::duration_cast<std::chrono::seconds>(exp->time_since_epoch()).count() ==
        1796205600);
  CHECK_FALSE(auth::jwt_expiry("opaque-token"));
  CHECK_FALSE(auth::jwt_expiry("a.!!!.c"));
  CHECK_FALSE(auth::jwt_expiry("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2ln"));  // no exp
}

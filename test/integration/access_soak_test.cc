// The access-control soak (docs/security.md): agents long-polling the controller's service
// with --auth kubernetes, each with its own pod-bound token, while policies and pods churn
// and tokens rotate. At the end every agent holds the table a from-scratch compile gives for
// its pod, no agent was ever refused, and RSS is flat after warm-up. CTest runs it short
// (TOLLGATE_SOAK_AGENTS, TOLLGATE_SOAK_SECONDS: 200 agents, 15 s); docs/security.md has a
// full run's figures.
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "support/access.h"
#include "support/conn.h"
#include "support/deadlines.h"
#include "support/fake_apiserver.h"
#include "support/fixtures.h"
#include "support/from_scratch.h"
#include "tollgate/publish/publisher.h"
#include "tollgate/server/server.h"

namespace tollgate {
namespace {

using namespace std::chrono_literals;
using index::Kind;
using Clock = std::chrono::steady_clock;

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);  // NOLINT(concurrency-mt-unsafe): read before threads
  return v != nullptr ? std::atoi(v) : fallback;
}

long rss_kib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  }
  return 0;
}

std::string name_of(int i) { return "pod-" + std::to_string(i); }

// What the churn thread and the agents share: each pod's current uid and token.
struct Cluster {
  std::mutex mu;
  std::vector<index::PodObject> pods;         // guarded by mu
  std::vector<std::string> tokens;            // guarded by mu; the token agent i presents
  std::vector<index::PolicyObject> policies;  // guarded by mu
};

TEST_CASE("agents keep their tables through churn and token rotation, never refused") {
  const int agents = env_int("TOLLGATE_SOAK_AGENTS", 200);
  const auto duration = std::chrono::seconds(env_int("TOLLGATE_SOAK_SECONDS", 15));
  testing::FakeApiServer api;
  publish::Publisher pub{policy::MeshConfig{},
                         publish::PublisherOptions{std::chrono::microseconds(500), 20ms, 256}};
  server::ServerOptions o;
  o.listen = "127.0.0.1:0";
  o.threads = 2;
  // Verdict caches of twice the agents: full within the warm-up, so that what RSS does after
  // it is the steady state rather than the caches filling toward their bound.
  auth::ReviewerOptions ro;
  ro.capacity = static_cast<std::size_t>(2 * agents);
  o.access = testing::access_for(api, ro);
  server::Server server(o, pub);
  pub.start();
  REQUIRE(server.start().ok());

  Cluster cluster;
  int generation = 0;
  auto mint = [&](int i, const std::string& uid) {  // a new token for pod i (kubelet rotation)
    const std::string token = "tok-" + std::to_string(i) + "-" + std::to_string(++generation);
    api.reviews().add_token(token, testing::pod_token("default", "sa-" + std::to_string(i % 10),
                                                      name_of(i), uid, {"tollgate"}));
    return token;
  };
  for (int i = 0; i < agents; ++i) {
    auto p = testing::mk_pod("default", name_of(i), {{"app", "a" + std::to_string(i % 20)}},
                             "10.1." + std::to_string(i / 250) + "." + std::to_string(i % 250),
                             "sa-" + std::to_string(i % 10));
    p.uid = "uid-" + std::to_string(i) + "-0";
    cluster.tokens.push_back(mint(i, p.uid));
    cluster.pods.push_back(std::move(p));
  }
  pub.submit(testing::replace(Kind::kNamespace, {index::NamedObject{"", "default"}}));
  pub.submit(testing::replace(Kind::kServiceAccount, {}));
  {
    std::vector<index::Object> pods(cluster.pods.begin(), cluster.pods.end());
    pub.submit(testing::replace(Kind::kPod, std::move(pods)));
  }
  pub.submit(testing::replace(Kind::kPolicy, {}));

  // Each agent: long-polls its pod's table with its current token, as tollgate agent does.
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> answers{0}, refusals{0}, failures{0};
  std::vector<std::string> etags(static_cast<std::size_t>(agents));
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(agents));
  for (int i = 0; i < agents; ++i) {
    threads.emplace_back([&, i] {
      std::string& etag = etags[static_cast<std::size_t>(i)];
      while (!stop.load()) {
        std::string token;
        {
          std::lock_guard lock(cluster.mu);
          token = cluster.tokens[static_cast<std::size_t>(i)];
        }
        testing::Conn conn(server.port());
        auto r =
            conn.request(testing::get("/v1/tables/default/" + name_of(i) + "?wait=2",
                                      "Authorization: Bearer " + token + "\r\n" +
                                          (etag.empty() ? "" : "If-None-Match: " + etag + "\r\n")),
                         testing::deadline(20s));
        if (!r) {
          ++failures;
          continue;
        }
        ++answers;
        if (r->status == 200) etag = r->header("etag");
        // A refusal of a token that is no longer the pod's (the pod was recreated meanwhile:
        // in a cluster, its agent is gone) is the rule working; any other is a defect.
        if (r->status == 401 || r->status == 403) {
          std::lock_guard lock(cluster.mu);
          if (cluster.tokens[static_cast<std::size_t>(i)] == token) ++refusals;
        }
        if (r->status == 503) std::this_thread::sleep_for(200ms);  // as the agent backs off
      }
    });
  }

  // Churn: a policy changes, a pod is recreated (new uid, new token: a new agent), a token
  // rotates; a few times a second each.
  std::mt19937 rng(7);
  long rss_warm = 0, rss_half = 0;
  const auto start = Clock::now();
  int step = 0;
  while (Clock::now() - start < duration) {
    std::this_thread::sleep_for(50ms);
    if (rss_warm == 0 && Clock::now() - start > duration / 4) rss_warm = rss_kib();
    if (rss_half == 0 && Clock::now() - start > duration / 2) rss_half = rss_kib();
    const int i = static_cast<int>(rng() % static_cast<unsigned>(agents));
    std::lock_guard lock(cluster.mu);
    switch (step++ % 3) {
      case 0: {
        auto p = testing::mk_policy("default", "p" + std::to_string(step % 7),
                                    R"({"selector":{"matchLabels":{"app":"a)" +
                                        std::to_string(step % 20) +
                                        R"("}},"rules":[{"to":[{"operation":{"paths":["/v)" +
                                        std::to_string(step) + R"("]}}]}]})");
        std::erase_if(cluster.policies, [&](const index::PolicyObject& q) {
          return q.policy->name == p.policy->name;
        });
        cluster.policies.push_back(p);
        pub.submit(testing::upsert(std::move(p), Kind::kPolicy));
        break;
      }
      case 1: {
        auto& p = cluster.pods[static_cast<std::size_t>(i)];
        p.uid = "uid-" + std::to_string(i) + "-" + std::to_string(step);
        cluster.tokens[static_cast<std::size_t>(i)] = mint(i, p.uid);
        pub.submit(testing::upsert(p, Kind::kPod));
        break;
      }
      default:
        cluster.tokens[static_cast<std::size_t>(i)] =
            mint(i, cluster.pods[static_cast<std::size_t>(i)].uid);
        break;
    }
  }
  const long rss_end = rss_kib();

  // Quiet: every agent converges on the from-scratch table of its pod.
  std::map<std::string, std::string> want;
  {
    std::lock_guard lock(cluster.mu);
    want = testing::from_scratch(cluster.policies, cluster.pods, policy::MeshConfig{});
  }
  auto converged = [&] {
    for (int i = 0; i < agents; ++i) {
      if (etags[static_cast<std::size_t>(i)] != want["default/" + name_of(i)]) return false;
    }
    return true;
  };
  const auto until = Clock::now() + testing::deadline(30s);
  while (!converged() && Clock::now() < until) std::this_thread::sleep_for(50ms);  // polled
  stop = true;
  for (auto& t : threads) t.join();
  server.shutdown();
  pub.stop();
  const auto stats = o.access->stats();
  INFO("agents " << agents << ", " << duration.count() << " s, answers " << answers << ", refusals "
                 << refusals << ", failures " << failures << ", token reviews "
                 << stats.token_reviews << ", RSS warm " << rss_warm << " KiB, end " << rss_end
                 << " KiB");
  WARN("soak: agents " << agents << ", " << duration.count() << " s, answers " << answers
                       << ", token reviews " << stats.token_reviews << ", cache hits "
                       << stats.cache_hits << ", RSS at 1/4 " << rss_warm << " KiB, at 1/2 "
                       << rss_half << " KiB, at the end " << rss_end << " KiB");
  CHECK(converged());
  CHECK(refusals == 0);
  CHECK(failures == 0);
  // Flat: no growth beyond noise after warm-up (allocator arenas settle in the first quarter).
  CHECK(rss_end <= rss_warm + rss_warm / 4 + 8192);
}

}  // namespace
}  // namespace tollgate

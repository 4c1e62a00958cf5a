// Who may read which table, through real sockets (docs/security.md): the controller's decision
// service with --auth kubernetes, reviewing tokens and access with the fake API server's
// TokenReview and SubjectAccessReview. The hostile-client matrix, mTLS identities, an API
// server that cannot answer, and a burst of bogus tokens while a legitimate agent is served.
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "support/access.h"
#include "support/certs.h"
#include "support/child.h"
#include "support/conn.h"
#include "support/deadlines.h"
#include "support/fake_apiserver.h"
#include "support/fixtures.h"
#include "support/run.h"
#include "tollgate/publish/publisher.h"
#include "tollgate/server/server.h"

namespace tollgate {
namespace {

using namespace std::chrono_literals;
using index::Kind;
using testing::Conn;
using testing::get;
using testing::post;
using testing::Reply;
using Clock = std::chrono::steady_clock;

const std::vector<std::string> kTollgate = {"tollgate"};

index::PodObject pod(const std::string& name, const std::string& sa, const std::string& ip,
                     const std::string& uid) {
  auto p = testing::mk_pod("default", name, {{"app", sa}}, ip, sa);
  p.uid = uid;
  return p;
}

// The controller's service with access control, over a cluster of three pods in default:
// web-1 and web-2 run as web, db-1 as db.
struct Guarded {
  testing::FakeApiServer api;
  publish::Publisher pub{policy::MeshConfig{},
                         publish::PublisherOptions{std::chrono::microseconds(500), 20ms, 256}};
  server::Server server;

  explicit Guarded(server::ServerOptions o = {}, auth::ReviewerOptions ro = {})
      : server(with_access(std::move(o), ro), pub) {
    pub.start();
    auto started = server.start();
    INFO((started.ok() ? "" : started.error().message));
    REQUIRE(started.ok());
    pub.submit(testing::replace(Kind::kNamespace, {index::NamedObject{"", "default"}}));
    pub.submit(testing::replace(Kind::kServiceAccount, {index::NamedObject{"default", "web"},
                                                        index::NamedObject{"default", "db"}}));
    pub.submit(testing::replace(Kind::kPod, {pod("web-1", "web", "10.0.0.1", "uid-web-1"),
                                             pod("web-2", "web", "10.0.0.2", "uid-web-2"),
                                             pod("db-1", "db", "10.0.0.3", "uid-db-1")}));
    pub.submit(testing::replace(Kind::kPolicy, {}));
    REQUIRE(settle([](const publish::Snapshot& s) { return s.synced && s.pods == 3; }));
    auto& r = api.reviews();
    r.add_token("tok-web-1", testing::pod_token("default", "web", "web-1", "uid-web-1", kTollgate));
    r.add_token("tok-web-sa", [] {
      auto t = testing::pod_token("default", "web", "", "", kTollgate);
      t.extra = nlohmann::json::object();  // a service account's token not bound to a pod
      return t;
    }());
    auto expired = testing::pod_token("default", "web", "web-1", "uid-web-1", kTollgate);
    expired.expired = true;
    r.add_token("tok-expired", expired);
    r.add_token("tok-wrong-audience",
                testing::pod_token("default", "web", "web-1", "uid-web-1", {"vault"}));
    testing::FakeToken alice;
    alice.username = "alice";
    alice.groups = {"system:authenticated"};
    alice.audiences = kTollgate;
    r.add_token("tok-alice", alice);
    testing::FakeToken ops = alice;
    ops.username = "ops";
    r.add_token("tok-ops", ops);
    testing::FakeToken admin = alice;
    admin.username = "admin";
    r.add_token("tok-admin", admin);
    r.allow("ops", "list", "security.istio.io", "authorizationpolicies", "default");
    r.allow("admin", "list", "security.istio.io", "authorizationpolicies", "");
  }
  ~Guarded() {
    server.shutdown();
    pub.stop();
  }

  server::ServerOptions with_access(server::ServerOptions o, const auth::ReviewerOptions& ro) {
    o.listen = "127.0.0.1:0";
    o.threads = 2;
    if (!o.access) o.access = testing::access_for(api, ro);
    return o;
  }

  bool settle(const std::function<bool(const publish::Snapshot&)>& pred) const {
    const auto until = Clock::now() + testing::deadline(10s);
    while (Clock::now() < until) {
      if (pred(*server.snapshot())) return true;
      std::this_thread::sleep_for(2ms);  // the publisher's thread: polled
    }
    return false;
  }

  std::optional<Reply> request(const std::string& raw) const {
    Conn c(server.port());
    return c.request(raw);
  }
};

std::string bearer(const std::string& token) { return "Authorization: Bearer " + token + "\r\n"; }

TEST_CASE("health, readiness and metrics stay open; everything else needs an identity") {
  Guarded g;
  for (const char* open : {"/healthz", "/readyz", "/metrics"}) {
    auto r = g.request(get(open));
    REQUIRE(r);
    CHECK(r->status == 200);
  }
  for (const std::string& raw : {get("/v1/tables/default/web-1"), get("/v1/tables?podIP=10.0.0.1"),
                                 get("/v1/workloads"), get("/v1/policies/default/x"),
                                 post("/v1/check", R"({"workload":{"namespace":"default"}})")}) {
    INFO(raw);
    auto r = g.request(raw);
    REQUIRE(r);
    CHECK(r->status == 401);
    CHECK(r->header("www-authenticate") == "Bearer realm=\"tollgate\"");
  }
}

TEST_CASE("the hostile-client matrix: each gets its 401 or 403 and learns nothing") {
  Guarded g;
  struct Case {
    std::string name, headers, target;
    int status;
  };
  const std::vector<Case> cases = {
      {"own table by name", bearer("tok-web-1"), "/v1/tables/default/web-1", 200},
      {"own table by IP", bearer("tok-web-1"), "/v1/tables?podIP=10.0.0.1", 200},
      {"not a bearer token", "Authorization: Basic d2ViOnB3\r\n", "/v1/tables/default/web-1", 401},
      {"a bearer without a token", "Authorization: Bearer \r\n", "/v1/tables/default/web-1", 401},
      {"a garbage token", bearer("garbage"), "/v1/tables/default/web-1", 401},
      {"an expired token", bearer("tok-expired"), "/v1/tables/default/web-1", 401},
      {"a token for another audience", bearer("tok-wrong-audience"), "/v1/tables/default/web-1",
       401},
      {"pod A's token for pod B by name", bearer("tok-web-1"), "/v1/tables/default/web-2", 403},
      {"pod A's token for pod B by IP", bearer("tok-web-1"), "/v1/tables?podIP=10.0.0.2", 403},
      {"pod A's token for another account's pod", bearer("tok-web-1"), "/v1/tables/default/db-1",
       403},
      {"pod A's token for a pod of another namespace", bearer("tok-web-1"),
       "/v1/tables/kube-system/coredns", 403},
      {"an account's token for its pods", bearer("tok-web-sa"), "/v1/tables/default/web-2", 200},
      {"an account's token for another account's pod", bearer("tok-web-sa"),
       "/v1/tables/default/db-1", 403},
      {"an account's token for an unknown pod of its namespace", bearer("tok-web-sa"),
       "/v1/tables/default/web-9", 404},
      {"a user for a pod table", bearer("tok-alice"), "/v1/tables/default/web-1", 403},
      {"an operator without list", bearer("tok-alice"), "/v1/workloads", 403},
      {"a pod's token as an operator", bearer("tok-web-1"), "/v1/policies/default/x", 403},
      {"an operator allowed in default: its policies", bearer("tok-ops"), "/v1/policies/default/x",
       404},
      {"an operator allowed in default: cluster-wide workloads", bearer("tok-ops"), "/v1/workloads",
       403},
      {"a cluster-wide operator", bearer("tok-admin"), "/v1/workloads", 200},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    auto r = g.request(get(c.target, c.headers));
    REQUIRE(r);
    CHECK(r->status == c.status);
    if (c.status == 401 || c.status == 403) {
      // Nothing about other pods: neither their names nor their tables.
      for (const char* secret : {"web-2", "db-1", "10.0.0.2", "10.0.0.3", "\"rules\"", "etag"}) {
        if (c.target.find(secret) == std::string::npos)
          CHECK_THAT(r->body, !Catch::Contains(secret));
      }
      CHECK(r->header("etag").empty());
    }
  }
  // /v1/check: in the namespace the workload names, or cluster-wide when it names none.
  const std::string in_default = R"({"workload":{"namespace":"default","pod":"web-1"},
      "request":{"protocol":"http","method":"GET","path":"/"}})";
  auto ops = g.request(post("/v1/check", in_default) + "");
  REQUIRE(ops);
  CHECK(ops->status == 401);
  Conn c(g.server.port());
  auto allowed =
      c.request("POST /v1/check HTTP/1.1\r\nHost: t\r\n" + bearer("tok-ops") +
                "Content-Length: " + std::to_string(in_default.size()) + "\r\n\r\n" + in_default);
  REQUIRE(allowed);
  CHECK(allowed->status == 200);
  auto denied =
      c.request("POST /v1/check HTTP/1.1\r\nHost: t\r\n" + bearer("tok-alice") +
                "Content-Length: " + std::to_string(in_default.size()) + "\r\n\r\n" + in_default);
  REQUIRE(denied);
  CHECK(denied->status == 403);
}

TEST_CASE("a pod recreated under the same name is another pod: the old token is refused") {
  Guarded g;
  auto before = g.request(get("/v1/tables/default/web-1", bearer("tok-web-1")));
  REQUIRE(before);
  CHECK(before->status == 200);
  g.pub.submit(testing::upsert(pod("web-1", "web", "10.0.0.1", "uid-web-1-new"), Kind::kPod));
  REQUIRE(g.settle([](const publish::Snapshot& s) {
    const auto* e = s.find("default", "web-1");
    return e != nullptr && e->pod->uid == index::uid_digest("uid-web-1-new");
  }));
  auto after = g.request(get("/v1/tables/default/web-1", bearer("tok-web-1")));
  REQUIRE(after);
  CHECK(after->status == 403);
  CHECK_THAT(after->body, Catch::Contains("uid-web-1"));  // its own pod, as the token says
}

TEST_CASE("a parked long-poll whose pod is recreated is answered 403, not the new pod's table") {
  Guarded g;
  auto first = g.request(get("/v1/tables/default/web-1", bearer("tok-web-1")));
  REQUIRE(first);
  REQUIRE(first->status == 200);
  Conn c(g.server.port());
  REQUIRE(c.send(get("/v1/tables/default/web-1?wait=30",
                     bearer("tok-web-1") + "If-None-Match: " + first->header("etag") + "\r\n")));
  REQUIRE(testing::eventually([&] { return g.server.parked() == 1; }, 10s));
  auto recreated = pod("web-1", "web", "10.0.0.1", "uid-web-1-new");
  recreated.labels = {{"app", "web"}, {"version", "2"}};  // a change to its table too
  g.pub.submit(testing::upsert(recreated, Kind::kPod));
  g.pub.submit(testing::upsert(
      testing::mk_policy("default", "v2", R"({"selector":{"matchLabels":{"version":"2"}}})"),
      Kind::kPolicy));
  auto r = c.reply(testing::deadline(10s));
  REQUIRE(r);
  CHECK(r->status == 403);
}

TEST_CASE(
    "when the API server cannot review, requests fail closed with 503; cached verdicts hold") {
  Guarded g;
  auto warm = g.request(get("/v1/tables/default/web-1", bearer("tok-web-1")));
  REQUIRE(warm);
  REQUIRE(warm->status == 200);
  g.api.reviews().fail_next(1000);
  auto fresh = g.request(get("/v1/tables/default/web-2", bearer("tok-web-sa")));
  REQUIRE(fresh);
  CHECK(fresh->status == 503);
  CHECK_FALSE(fresh->header("retry-after").empty());
  CHECK_THAT(fresh->body, Catch::Contains("cannot review"));
  auto cached = g.request(get("/v1/tables/default/web-1", bearer("tok-web-1")));
  REQUIRE(cached);
  CHECK(cached->status == 200);
}

TEST_CASE("a review slower than the budget answers 503 without holding a worker") {
  server::ServerOptions o;
  o.review_budget = 1s;
  auth::ReviewerOptions ro;
  ro.timeout = std::chrono::milliseconds(testing::deadline(20s));
  Guarded g(o, ro);
  g.api.reviews().stall_next(1, testing::deadline(5s));
  Conn slow(g.server.port());
  REQUIRE(slow.send(get("/v1/tables/default/web-1", bearer("tok-web-1"))));
  // Meanwhile the open endpoints answer at once: the review runs on a review thread.
  auto health = g.request(get("/healthz"));
  REQUIRE(health);
  CHECK(health->status == 200);
  auto r = slow.reply(testing::deadline(10s));
  REQUIRE(r);
  CHECK(r->status == 503);
  CHECK_FALSE(r->header("retry-after").empty());
}

TEST_CASE("a client certificate's SPIFFE id reads its service account's pods (mTLS)") {
  testing::TempDir dir;
  const auto ca = testing::make_ca("clients");
  const auto server_cert = testing::make_self_signed("tollgate");
  const auto web = testing::issue(ca, "web", {"URI:spiffe://cluster.local/ns/default/sa/web"});
  const auto plain = testing::issue(ca, "nobody", {"DNS:nobody.example"});
  testing::write_file(dir.path() / "tls.crt", server_cert.certificate);
  testing::write_file(dir.path() / "tls.key", server_cert.private_key);
  testing::write_file(dir.path() / "ca.crt", ca.certificate);
  server::ServerOptions o;
  o.tls_cert_file = (dir.path() / "tls.crt").string();
  o.tls_key_file = (dir.path() / "tls.key").string();
  o.tls_client_ca_file = (dir.path() / "ca.crt").string();
  Guarded g(o);
  auto ask = [&](const testing::Pem& client, const std::string& target) {
    Conn c(g.server.port());
    REQUIRE(c.start_tls(server_cert.certificate, &client));
    auto r = c.request(get(target));
    REQUIRE(r);
    return r->status;
  };
  CHECK(ask(web, "/v1/tables/default/web-1") == 200);
  CHECK(ask(web, "/v1/tables/default/web-2") == 200);
  CHECK(ask(web, "/v1/tables/default/db-1") == 403);
  // A certificate without a SPIFFE id names nobody: as without credentials.
  CHECK(ask(plain, "/v1/tables/default/web-1") == 401);
  CHECK(g.api.reviews().token_reviews() == 0);  // no review was needed
}

TEST_CASE("a burst of distinct bogus tokens is rate-limited while an agent keeps being served") {
  Guarded g;
  auto warm = g.request(get("/v1/tables/default/web-1", bearer("tok-web-1")));
  REQUIRE(warm);
  REQUIRE(warm->status == 200);
  const auto reviews_before = g.api.reviews().token_reviews();
  // A legitimate long-poll, parked before the burst.
  Conn agent(g.server.port());
  REQUIRE(agent.send(get("/v1/tables/default/web-1?wait=60",
                         bearer("tok-web-1") + "If-None-Match: " + warm->header("etag") + "\r\n")));
  REQUIRE(testing::eventually([&] { return g.server.parked() == 1; }, 10s));

  constexpr int kThreads = 4, kPerThread = 2500;  // 10,000 distinct tokens
  std::atomic<int> refused{0}, unavailable{0}, other{0};
  const auto start = Clock::now();
  std::vector<std::thread> flood;
  for (int t = 0; t < kThreads; ++t) {
    flood.emplace_back([&, t] {
      Conn c(g.server.port());
      for (int i = 0; i < kPerThread; ++i) {
        auto r = c.request(get("/v1/tables/default/web-1",
                               bearer("bogus-" + std::to_string(t) + "-" + std::to_string(i))));
        if (!r) {
          ++other;
          return;
        }
        (r->status == 401 ? refused : r->status == 503 ? unavailable : other)++;
      }
    });
  }
  // During the burst: a change to web-1's table reaches the parked agent, and a fresh request
  // with its (cached) token is answered.
  g.pub.submit(testing::upsert(
      testing::mk_policy("default", "web-only", R"({"selector":{"matchLabels":{"app":"web"}}})"),
      Kind::kPolicy));
  auto woken = agent.reply(testing::deadline(10s));
  REQUIRE(woken);
  CHECK(woken->status == 200);
  auto again = g.request(get("/v1/tables/default/web-1", bearer("tok-web-1")));
  REQUIRE(again);
  CHECK(again->status == 200);
  for (auto& t : flood) t.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const auto reviews = g.api.reviews().token_reviews() - reviews_before;
  INFO("401: " << refused << ", 503: " << unavailable << ", other: " << other << ", reviews "
               << reviews << " in " << seconds << " s");
  CHECK(other == 0);
  CHECK(refused + unavailable == kThreads * kPerThread);
  // The API server saw at most the burst (100) plus 50 a second.
  CHECK(static_cast<double>(reviews) <= 100 + 50 * seconds + 1);
  CHECK(unavailable > 0);
  // /metrics says what happened: the reviews, the requests spared them, the answers.
  auto metrics = g.request(get("/metrics"));
  REQUIRE(metrics);
  CHECK_THAT(metrics->body, Catch::Contains("tollgate_auth_reviews_total{kind=\"token\"} " +
                                            std::to_string(g.api.reviews().token_reviews())));
  CHECK_THAT(metrics->body, Catch::Contains("tollgate_auth_rate_limited_total " +
                                            std::to_string(unavailable.load())));
  CHECK_THAT(metrics->body, Catch::Contains("code=\"401\""));
  CHECK_THAT(metrics->body, Catch::Contains("code=\"503\""));
}

// ---- the real binaries: tollgate run --auth kubernetes and tollgate agent --token-file ----

std::string write_kubeconfig(const testing::TempDir& d, const std::string& server) {
  const auto path = d.path() / "kubeconfig";
  testing::write_file(path,
                      "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
                      "clusters:\n- name: fake\n  cluster:\n    server: " +
                          server +
                          "\nusers:\n- name: me\n  user: {}\n"
                          "contexts:\n- name: fake\n  context: {cluster: fake, user: me}\n");
  return path.string();
}

// The agent with `token` asks the controller for web-1's table; its /readyz says whether it
// got it.
std::optional<Reply> agent_readyz(const testing::TempDir& d, std::uint16_t controller,
                                  const std::string& name, const std::string& token,
                                  testing::Child& agent, bool expect_ready) {
  testing::write_file(d.path() / (name + ".token"), token + "\n");
  const auto port_file = d.path() / (name + ".port");
  REQUIRE(agent.spawn(
      TOLLGATE_BINARY,
      {"agent", "--controller", "http://127.0.0.1:" + std::to_string(controller), "--namespace",
       "default", "--pod", "web-1", "--state-dir", (d.path() / (name + "-state")).string(),
       "--listen", "127.0.0.1:0", "--port-file", port_file.string(), "--token-file",
       (d.path() / (name + ".token")).string()},
      (d.path() / (name + ".log")).string()));
  const auto port = testing::Child::wait_for_port(port_file.string(), testing::deadline(30s));
  REQUIRE(port != 0);
  std::optional<Reply> last;
  testing::eventually(
      [&] {
        Conn c(port);
        last = c.request(get("/readyz"));
        if (expect_ready) return last && last->status == 200;
        // Not ready, and the refusal counted.
        Conn m(port);
        auto metrics = m.request(get("/metrics"));
        return metrics &&
               metrics->body.find("sync_errors_total{kind=\"refused\"} 0") == std::string::npos;
      },
      testing::deadline(30s));
  INFO(agent.log());
  return last;
}

TEST_CASE(
    "tollgate agent reads its pod's table from tollgate run --auth kubernetes with its "
    "pod's token, and a foreign token reads nothing") {
  testing::FakeApiServer api;
  api.add_collection("/api/v1/pods", "PodList", "v1", false);
  api.add_collection("/api/v1/serviceaccounts", "ServiceAccountList", "v1", false);
  api.add_collection("/api/v1/namespaces", "NamespaceList", "v1", false);
  api.add_collection("/apis/security.istio.io/v1/authorizationpolicies", "AuthorizationPolicyList",
                     "security.istio.io/v1", true);
  api.upsert("/api/v1/namespaces", nlohmann::json{{"metadata", {{"name", "default"}}}});
  for (const auto& [name, uid, sa] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"web-1", "uid-web-1", "web"}, {"db-1", "uid-db-1", "db"}}) {
    api.upsert("/api/v1/pods",
               nlohmann::json::parse(R"({"metadata":{"name":")" + name + R"(","namespace":"default",
                 "uid":")" + uid + R"(","labels":{"app":")" +
                                     sa + R"("}},
                 "spec":{"serviceAccountName":")" +
                                     sa + R"(","containers":[]},
                 "status":{"phase":"Running","podIP":"10.0.0.9"}})"));
  }
  api.reviews().add_token("tok-web-1",
                          testing::pod_token("default", "web", "web-1", "uid-web-1", kTollgate));
  api.reviews().add_token("tok-db-1",
                          testing::pod_token("default", "db", "db-1", "uid-db-1", kTollgate));
  testing::TempDir d;
  testing::Child controller;
  const auto port_file = d.path() / "controller.port";
  REQUIRE(controller.spawn(TOLLGATE_BINARY,
                           {"run", "--kubeconfig", write_kubeconfig(d, api.url()), "--listen",
                            "127.0.0.1:0", "--port-file", port_file.string()},
                           (d.path() / "controller.log").string()));
  const auto port = testing::Child::wait_for_port(port_file.string(), testing::deadline(30s));
  REQUIRE(port != 0);
  {
    INFO(controller.log());
    auto anonymous = Conn(port).request(get("/v1/tables/default/web-1"));
    REQUIRE(anonymous);
    CHECK(anonymous->status == 401);
  }
  testing::Child web;
  auto ready = agent_readyz(d, port, "web", "tok-web-1", web, true);
  REQUIRE(ready);
  CHECK(ready->status == 200);
  testing::Child foreign;  // db-1's token, asking for web-1's table
  auto refused = agent_readyz(d, port, "foreign", "tok-db-1", foreign, false);
  REQUIRE(refused);
  CHECK(refused->status == 503);  // no table: not ready, and every decision denies
  CHECK_THAT(foreign.log(), Catch::Contains("403"));
}

}  // namespace
}  // namespace tollgate

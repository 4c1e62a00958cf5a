// The decision service over loopback: a real Server on 127.0.0.1 (port 0) fed by a real
// Publisher, driven by a small client on raw sockets (and OpenSSL for TLS). Changes are made
// by submitting index events, as the sources do.
#include "tollgate/server/server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cctype>
#include <chrono>
#include <future>
#include <map>
#include <optional>
#include <string>
#include <thread>

#include "support/certs.h"
#include "support/child.h"
#include "support/conn.h"
#include "support/deadlines.h"
#include "support/fixtures.h"
#include "support/http_get.h"
#include "support/run.h"
#include "tollgate/index/objects.h"
#include "tollgate/publish/publisher.h"
#include "tollgate/util/strings.h"

namespace tollgate {
namespace {

using namespace std::chrono_literals;
using index::Event;
using index::Kind;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

// ---- cluster objects -------------------------------------------------------------------

using testing::Conn;
using testing::del;
using testing::get;
using testing::mk_policy;
using testing::post;
using testing::replace;
using testing::Reply;
using testing::upsert;

// A running pod of app `app`, labelled app=`app` and running as service account `app`.
index::PodObject mk_pod(const std::string& ns, const std::string& name, const std::string& app,
                        const std::string& ip) {
  return testing::mk_pod(ns, name, {{"app", app}}, ip, app);
}

index::PolicyObject deny_web(int port) {
  return mk_policy("default", "deny-web",
                   R"({"action":"DENY","selector":{"matchLabels":{"app":"web"}},
                       "rules":[{"to":[{"operation":{"ports":[")" +
                       std::to_string(port) + R"("]}}]}]})");
}

// ---- the service under test ------------------------------------------------------------

server::ServerOptions loopback(server::ServerOptions o = {}) {
  o.listen = "127.0.0.1:0";
  o.threads = 2;
  return o;
}

struct Service {
  publish::Publisher pub{policy::MeshConfig{},
                         publish::PublisherOptions{std::chrono::microseconds(500), 20ms, 256}};
  server::Server server;

  explicit Service(server::ServerOptions o = {}) : server(loopback(std::move(o)), pub) {
    pub.start();
    auto started = server.start();
    INFO((started.ok() ? "" : started.error().message));
    REQUIRE(started.ok());
  }
  ~Service() {
    server.shutdown();
    pub.stop();
  }

  std::uint16_t port() const { return server.port(); }

  // Lists every kind: namespaces, service accounts, three pods, one DENY policy for web.
  void sync() {
    pub.submit(replace(Kind::kNamespace, {index::NamedObject{"", "default"},
                                          index::NamedObject{"", "istio-system"}}));
    pub.submit(replace(Kind::kServiceAccount, {index::NamedObject{"default", "web"},
                                               index::NamedObject{"default", "db"}}));
    pub.submit(replace(Kind::kPod, {mk_pod("default", "web-1", "web", "10.0.0.1"),
                                    mk_pod("default", "web-2", "web", "10.0.0.2"),
                                    mk_pod("default", "db-1", "db", "10.0.0.3")}));
    pub.submit(replace(Kind::kPolicy, {deny_web(8080)}));
    REQUIRE(settle([](const publish::Snapshot& s) { return s.synced && s.pods == 3; }));
  }

  // Waits until the snapshot the server answers from satisfies `pred` (the publisher's own
  // snapshot is ahead of it until the publish listener has run).
  bool settle(const std::function<bool(const publish::Snapshot&)>& pred) {
    const auto deadline = Clock::now() + testing::deadline(10s);
    while (Clock::now() < deadline) {
      if (pred(*server.snapshot())) return true;
      std::this_thread::sleep_for(2ms);
    }
    return false;
  }

  std::string etag(const std::string& ns, const std::string& pod) {
    const auto* e = server.snapshot()->find(ns, pod);
    return e != nullptr && e->table != nullptr ? e->table->etag : "";
  }
  std::string wire(const std::string& ns, const std::string& pod) {
    return server.snapshot()->find(ns, pod)->table->wire;
  }

  bool parked(std::size_t n) {
    const auto deadline = Clock::now() + testing::deadline(10s);
    while (Clock::now() < deadline) {
      if (server.parked() == n) return true;
      std::this_thread::sleep_for(5ms);
    }
    return false;
  }

  std::optional<Reply> request(const std::string& raw) {
    Conn c(port());
    return c.request(raw);
  }
};

// ---- tables ------------------------------------------------------------------------------

TEST_CASE("A pod's table is served byte for byte with its ETag, revision and sync time") {
  Service svc;
  svc.sync();
  auto r = svc.request(get("/v1/tables/default/web-1"));
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->header("content-type") == "application/json");
  CHECK(r->header("etag") == svc.etag("default", "web-1"));
  CHECK(r->body == svc.wire("default", "web-1"));
  CHECK(r->header("x-tollgate-revision") == std::to_string(svc.server.snapshot()->revision));
  const auto synced_at = r->header("x-tollgate-synced-at");
  CHECK(synced_at.size() == 24);
  CHECK(synced_at.back() == 'Z');
  CHECK(r->body_json()["policies"] == json::array({"default/deny-web"}));
}

TEST_CASE("If-None-Match with the current ETag answers 304 with the same headers and no body") {
  Service svc;
  svc.sync();
  const auto etag = svc.etag("default", "web-1");
  Conn c(svc.port());
  auto r = c.request(get("/v1/tables/default/web-1", "If-None-Match: " + etag + "\r\n"));
  REQUIRE(r);
  CHECK(r->status == 304);
  CHECK(r->header("etag") == etag);
  CHECK(r->body.empty());
  CHECK_FALSE(r->header("x-tollgate-revision").empty());
  // A different ETag gets the table; the connection is kept alive between the two.
  r = c.request(get("/v1/tables/default/web-1", "If-None-Match: \"stale\"\r\n"));
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body == svc.wire("default", "web-1"));
}

TEST_CASE("A table is found by pod IP and names the pod it belongs to") {
  Service svc;
  svc.sync();
  auto r = svc.request(get("/v1/tables?podIP=10.0.0.3"));
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->header("x-tollgate-pod") == "default/db-1");
  CHECK(r->header("etag") == svc.etag("default", "db-1"));
  r = svc.request(get("/v1/tables?podIP=10.9.9.9"));
  REQUIRE(r);
  CHECK(r->status == 404);
}

TEST_CASE("An unknown pod gets 404 saying the controller does not know it yet") {
  Service svc;
  svc.sync();
  auto r = svc.request(get("/v1/tables/default/nobody"));
  REQUIRE(r);
  CHECK(r->status == 404);
  CHECK(r->body_json()["error"].get<std::string>().find("does not know pod default/nobody") !=
        std::string::npos);
}

TEST_CASE("Before the first full sync tables, checks and readiness answer 503, never a table") {
  Service svc;
  // Pods are known, but policies have not been listed: an empty table would allow everything.
  svc.pub.submit(replace(Kind::kPod, {mk_pod("default", "web-1", "web", "10.0.0.1")}));
  REQUIRE(svc.settle([](const publish::Snapshot& s) { return s.pods == 1; }));
  for (const auto& req :
       {get("/v1/tables/default/web-1"), get("/v1/tables?podIP=10.0.0.1"), get("/readyz"),
        get("/v1/workloads"),
        post("/v1/check", R"({"workload":{"namespace":"default","pod":"web-1"},"request":{}})")}) {
    auto r = svc.request(req);
    REQUIRE(r);
    INFO(req);
    CHECK(r->status == 503);
    CHECK(r->body_json()["error"].get<std::string>().find("first full sync") != std::string::npos);
  }
  auto live = svc.request(get("/healthz"));
  REQUIRE(live);
  CHECK(live->status == 200);
  svc.sync();
  auto ready = svc.request(get("/readyz"));
  REQUIRE(ready);
  CHECK(ready->status == 200);
}

// ---- long-poll ---------------------------------------------------------------------------

TEST_CASE("A long-poll is parked and answered with the new table when that pod's table changes") {
  Service svc;
  svc.sync();
  const auto web_etag = svc.etag("default", "web-1");
  const auto db_etag = svc.etag("default", "db-1");
  Conn web(svc.port()), db(svc.port());
  REQUIRE(web.send(
      get("/v1/tables/default/web-1", "If-None-Match: " + web_etag + "\r\nPrefer: wait=30\r\n")));
  REQUIRE(db.send(get("/v1/tables/default/db-1?wait=30", "If-None-Match: " + db_etag + "\r\n")));
  REQUIRE(svc.parked(2));
  CHECK_FALSE(web.reply(200ms));  // really parked: no answer yet

  svc.pub.submit(upsert(deny_web(9090), Kind::kPolicy));  // changes web's table, not db's
  const auto t0 = Clock::now();
  auto r = web.reply();
  REQUIRE(r);
  CHECK(Clock::now() - t0 < testing::deadline(2s));
  CHECK(r->status == 200);
  CHECK(r->header("etag") != web_etag);
  CHECK(r->header("etag") == svc.etag("default", "web-1"));
  CHECK(r->body == svc.wire("default", "web-1"));
  CHECK(svc.server.parked() == 1);  // db-1 is still parked: its table did not change
  CHECK_FALSE(db.reply(200ms));
}

TEST_CASE("After a long-poll is answered its connection carries the next requests") {
  Service svc;
  svc.sync();
  const auto etag = svc.etag("default", "web-1");
  Conn c(svc.port());
  REQUIRE(c.send(get("/v1/tables/default/web-1?wait=30", "If-None-Match: " + etag + "\r\n")));
  REQUIRE(svc.parked(1));
  svc.pub.submit(upsert(deny_web(9090), Kind::kPolicy));
  auto r = c.reply();
  REQUIRE(r);
  CHECK(r->status == 200);
  const auto next_etag = r->header("etag");
  r = c.request(get("/healthz"));  // the same connection, now idle again
  REQUIRE(r);
  CHECK(r->status == 200);
  // Parks again, and answers 304 when this wait ends.
  const auto t0 = Clock::now();
  r = c.request(get("/v1/tables/default/web-1?wait=1", "If-None-Match: " + next_etag + "\r\n"));
  REQUIRE(r);
  CHECK(r->status == 304);
  CHECK(Clock::now() - t0 >= 900ms);
  r = c.request(get("/v1/tables/default/web-1", "If-None-Match: " + next_etag + "\r\n"));
  REQUIRE(r);
  CHECK(r->status == 304);
  CHECK(svc.server.parked() == 0);
}

TEST_CASE("Pipelined requests are answered in order, also behind a parked long-poll") {
  Service svc;
  svc.sync();
  const auto etag = svc.etag("default", "web-1");
  Conn c(svc.port());
  REQUIRE(c.send(get("/healthz") + get("/v1/tables/default/web-1") + get("/v1/workloads")));
  auto r = c.reply();
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->header("etag").empty());
  r = c.reply();
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->header("etag") == etag);
  r = c.reply();
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body_json()["workloads"].size() == 3);
  // A request sent while the one before it is parked waits for that answer.
  const auto t0 = Clock::now();
  REQUIRE(c.send(get("/v1/tables/default/web-1?wait=1", "If-None-Match: " + etag + "\r\n") +
                 get("/v1/tables/default/db-1")));
  r = c.reply();
  REQUIRE(r);
  CHECK(r->status == 304);
  CHECK(Clock::now() - t0 >= 900ms);
  r = c.reply();
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->header("etag") == svc.etag("default", "db-1"));
}

TEST_CASE("An answer larger than the client takes at once is written as it reads") {
  Service svc;
  svc.sync();
  std::vector<index::Object> pods{mk_pod("default", "web-1", "web", "10.0.0.1"),
                                  mk_pod("default", "web-2", "web", "10.0.0.2"),
                                  mk_pod("default", "db-1", "db", "10.0.0.3")};
  for (int i = 0; i < 30000; ++i) {
    pods.push_back(mk_pod("default", "bulk-" + std::to_string(i), i % 2 == 0 ? "web" : "db",
                          "10." + std::to_string(1 + i / 62500) + "." +
                              std::to_string(i / 250 % 250) + "." + std::to_string(i % 250)));
  }
  svc.pub.submit(replace(Kind::kPod, pods));
  REQUIRE(svc.settle([](const publish::Snapshot& s) { return s.pods == 30003; }));
  Conn slow(svc.port(), 4096);
  REQUIRE(slow.send(get("/v1/workloads")));
  std::this_thread::sleep_for(300ms);         // the server wrote what the socket took, and waits
  auto other = svc.request(get("/healthz"));  // others are served meanwhile
  REQUIRE(other);
  CHECK(other->status == 200);
  auto r = slow.reply();
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body.size() > 4000000);  // more than loopback takes into its buffers at once
  CHECK(r->body_json()["workloads"].size() == 30003);
  r = slow.request(get("/healthz"));  // and the connection goes on
  REQUIRE(r);
  CHECK(r->status == 200);
}

TEST_CASE("A long-poll on an unchanged table answers 304 when its wait ends") {
  Service svc;
  svc.sync();
  const auto etag = svc.etag("default", "db-1");
  Conn c(svc.port());
  const auto t0 = Clock::now();
  auto r = c.request(get("/v1/tables/default/db-1?wait=1", "If-None-Match: " + etag + "\r\n"));
  const auto took = Clock::now() - t0;
  REQUIRE(r);
  CHECK(r->status == 304);
  CHECK(r->header("etag") == etag);
  CHECK(took >= 900ms);
  CHECK(took < testing::deadline(5s));
  CHECK(svc.server.parked() == 0);
}

TEST_CASE("The long-poll wait is capped by max_wait") {
  server::ServerOptions o;
  o.max_wait = std::chrono::seconds(1);
  Service svc(o);
  svc.sync();
  const auto t0 = Clock::now();
  auto r = svc.request(get("/v1/tables/default/db-1?wait=120",
                           "If-None-Match: " + svc.etag("default", "db-1") + "\r\n"));
  REQUIRE(r);
  CHECK(r->status == 304);
  CHECK(Clock::now() - t0 < testing::deadline(5s));
}

TEST_CASE("A long-poll on a pod that disappears answers 404") {
  Service svc;
  svc.sync();
  Conn c(svc.port());
  REQUIRE(c.send(get("/v1/tables/default/web-2?wait=30",
                     "If-None-Match: " + svc.etag("default", "web-2") + "\r\n")));
  REQUIRE(svc.parked(1));
  svc.pub.submit(del(mk_pod("default", "web-2", "web", "10.0.0.2"), Kind::kPod));
  auto r = c.reply();
  REQUIRE(r);
  CHECK(r->status == 404);
}

TEST_CASE("A long-poll whose client goes away is unparked") {
  Service svc;
  svc.sync();
  {
    Conn c(svc.port());
    REQUIRE(c.send(get("/v1/tables/default/db-1?wait=60",
                       "If-None-Match: " + svc.etag("default", "db-1") + "\r\n")));
    REQUIRE(svc.parked(1));
  }
  CHECK(svc.parked(0));
}

TEST_CASE("Shutdown answers parked long-polls with 304 and closes the connection") {
  Service svc;
  svc.sync();
  Conn c(svc.port()), idle(svc.port());
  REQUIRE(c.send(get("/v1/tables/default/db-1?wait=60",
                     "If-None-Match: " + svc.etag("default", "db-1") + "\r\n")));
  REQUIRE(svc.parked(1));
  const auto t0 = Clock::now();
  auto done = std::async(std::launch::async, [&] { svc.server.shutdown(); });
  auto r = c.reply();
  REQUIRE(r);
  CHECK(r->status == 304);
  CHECK(r->header("connection") == "close");
  CHECK(idle.closed_within(testing::deadline(5s)));  // idle keep-alive connections are closed too
  done.get();
  CHECK(Clock::now() - t0 < testing::deadline(5s));
  Conn late(svc.port());
  CHECK_FALSE(late.request(get("/healthz"), 500ms));
}

// ---- the other endpoints -------------------------------------------------------------------

TEST_CASE("/v1/check decides for a known pod with its table") {
  Service svc;
  svc.sync();
  auto r = svc.request(post("/v1/check", R"({"workload":{"namespace":"default","pod":"web-1"},
      "request":{"port":8080,"method":"GET","path":"/"}})"));
  REQUIRE(r);
  CHECK(r->status == 200);
  const auto d = r->body_json();
  CHECK(d["decision"] == "DENY");
  CHECK(d["policy"] == "default/deny-web");
  CHECK(d["rule"] == 0);
  CHECK_FALSE(d["reason"].get<std::string>().empty());
  r = svc.request(post("/v1/check", R"({"workload":{"namespace":"default","pod":"web-1"},
      "request":{"port":80}})"));
  REQUIRE(r);
  CHECK(r->body_json()["decision"] == "ALLOW");
  r = svc.request(post("/v1/check", R"({"workload":{"namespace":"default","pod":"ghost"},
      "request":{}})"));
  REQUIRE(r);
  CHECK(r->status == 404);
}

TEST_CASE("A client that expects 100-continue is told to go on and then answered") {
  Service svc;
  svc.sync();
  const std::string body = R"({"workload":{"namespace":"default","pod":"web-1"},"request":{}})";
  Conn c(svc.port());
  auto r = c.request(
      "POST /v1/check HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
      "Content-Length: " +
      std::to_string(body.size()) + "\r\n\r\n");
  REQUIRE(r);
  CHECK(r->status == 100);
  r = c.request(body);
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body_json()["decision"] == "ALLOW");
}

TEST_CASE("/v1/check compiles a described workload from the cluster's policies") {
  Service svc;
  svc.sync();
  auto r = svc.request(post("/v1/check", R"({"workload":{"namespace":"default",
      "labels":{"app":"web"},"serviceAccount":"web"},"request":{"port":8080}})"));
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body_json()["decision"] == "DENY");
  r = svc.request(post("/v1/check", R"({"workload":{"namespace":"default",
      "labels":{"app":"other"}},"request":{"port":8080}})"));
  REQUIRE(r);
  CHECK(r->body_json()["decision"] == "ALLOW");
  CHECK(r->body_json()["policy"].is_null());
}

TEST_CASE("/v1/check rejects bad input with 400 and a message naming the problem") {
  Service svc;
  svc.sync();
  struct Case {
    std::string body, says;
  };
  const std::string deep = std::string(5000, '[') + std::string(5000, ']');
  for (const auto& c : std::vector<Case>{
           {"{nope", "not valid JSON"},
           {"[1,2]", "must be a JSON object"},
           {R"({"request":{}})", "workload"},
           {R"({"workload":{"namespace":"default","pod":"web-1"},"request":{"port":"x"}})",
            "request.port"},
           {R"({"workload":{"labels":{"a":"b"}},"request":{}})", "workload.namespace"},
           {R"({"workload":{"namespace":"default","pod":"web-1"},"extra":1})", "extra"},
           {R"({"workload":)" + deep + "}", "nested deeper"},
           {R"({"workload":{"namespace":"default","pod":"web-1"},"request":{
               "requestPrincipal":"https://i.example/bob","jwtClaims":{"sub":"alice"}}})",
            "request.requestPrincipal \"https://i.example/bob\" disagrees with jwtClaims"},
       }) {
    INFO(c.body.substr(0, 80));
    auto r = svc.request(post("/v1/check", c.body));
    REQUIRE(r);
    CHECK(r->status == 400);
    CHECK(r->body_json()["error"].get<std::string>().find(c.says) != std::string::npos);
  }
}

TEST_CASE("/v1/workloads lists every pod with its labels, ETag and policies") {
  Service svc;
  svc.sync();
  auto r = svc.request(get("/v1/workloads"));
  REQUIRE(r);
  CHECK(r->status == 200);
  const auto list = r->body_json()["workloads"];
  REQUIRE(list.size() == 3);
  const auto web =
      *std::find_if(list.begin(), list.end(), [](const json& w) { return w["pod"] == "web-1"; });
  CHECK(web["namespace"] == "default");
  CHECK(web["labels"] == json{{"app", "web"}});
  CHECK(web["serviceAccount"] == "web");
  CHECK(web["etag"] == svc.etag("default", "web-1"));
  CHECK(web["policies"] == json::array({"default/deny-web"}));
}

TEST_CASE("/v1/policies/{ns}/{name} names the selected workloads and the findings") {
  Service svc;
  svc.sync();
  // A policy whose selector matches nothing and that names an unknown service account.
  svc.pub.submit(upsert(mk_policy("default", "odd", R"({"selector":{"matchLabels":{"app":"nope"}},
      "rules":[{"from":[{"source":{"principals":["cluster.local/ns/default/sa/ghost"]}}],
                "to":[{"operation":{"methods":["get"]}}]}]})"),
                        Kind::kPolicy));
  REQUIRE(svc.settle([](const publish::Snapshot& s) { return s.policies->size() == 2; }));
  auto r = svc.request(get("/v1/policies/default/deny-web"));
  REQUIRE(r);
  CHECK(r->status == 200);
  auto j = r->body_json();
  CHECK(j["policy"] == "default/deny-web");
  CHECK(j["selected"] == json::array({{{"namespace", "default"}, {"pod", "web-1"}},
                                      {{"namespace", "default"}, {"pod", "web-2"}}}));
  r = svc.request(get("/v1/policies/default/odd"));
  REQUIRE(r);
  j = r->body_json();
  INFO(j.dump());
  CHECK(j["selected"].empty());
  CHECK(j["validation"].is_array());
  CHECK_FALSE(j["lint"].empty());
  r = svc.request(get("/v1/policies/default/missing"));
  REQUIRE(r);
  CHECK(r->status == 404);
}

TEST_CASE("/metrics exposes requests, publishes, compile latency, tables and parked polls") {
  Service svc;
  svc.sync();
  REQUIRE(svc.request(get("/v1/tables/default/web-1")));
  REQUIRE(svc.request(get("/v1/tables/default/nobody")));
  std::vector<server::SourceStats> stats{{"Pod", 7, 2, 1}};
  svc.server.set_source_stats([&] { return stats; });
  auto r = svc.request(get("/metrics"));
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->header("content-type").starts_with("text/plain"));
  const auto& m = r->body;
  INFO(m);
  CHECK(m.find(R"(tollgate_http_requests_total{code="200",endpoint="table"} 1)") !=
        std::string::npos);
  CHECK(m.find(R"(tollgate_http_requests_total{code="404",endpoint="table"} 1)") !=
        std::string::npos);
  CHECK(m.find("tollgate_snapshot_publishes_total") != std::string::npos);
  CHECK(m.find("tollgate_snapshot_build_seconds_bucket") != std::string::npos);
  CHECK(m.find("tollgate_workloads 3") != std::string::npos);
  CHECK(m.find("tollgate_tables 2") != std::string::npos);
  CHECK(m.find("tollgate_parked_long_polls 0") != std::string::npos);
  CHECK(m.find("tollgate_seconds_since_last_sync") != std::string::npos);
  CHECK(m.find(R"(tollgate_watch_events_total{kind="Pod"} 7)") != std::string::npos);
  CHECK(m.find(R"(tollgate_watch_relists_total{kind="Pod"} 1)") != std::string::npos);
}

// ---- limits and bad input ------------------------------------------------------------------

server::ServerOptions tight() {
  server::ServerOptions o;
  o.max_header_bytes = 1024;
  o.max_body_bytes = 1024;
  o.header_timeout = std::chrono::seconds(1);
  o.body_timeout = std::chrono::seconds(1);
  o.idle_timeout = std::chrono::seconds(2);
  return o;
}

TEST_CASE("An oversized header answers 413 and closes the connection") {
  Service svc(tight());
  Conn c(svc.port());
  auto r = c.request(get("/healthz", "X-Big: " + std::string(4000, 'a') + "\r\n"));
  REQUIRE(r);
  CHECK(r->status == 413);
  CHECK(r->body_json()["error"].get<std::string>().find("header") != std::string::npos);
  CHECK(c.closed_within(testing::deadline(2s)));
}

TEST_CASE("An oversized body answers 413 before it is read") {
  Service svc(tight());
  Conn c(svc.port());
  auto r = c.request("POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n");
  REQUIRE(r);
  CHECK(r->status == 413);
  CHECK(r->body_json()["error"].get<std::string>().find("body") != std::string::npos);
  // Chunked, with no length up front: the limit still holds.
  Conn chunked(svc.port());
  r = chunked.request("POST /v1/check HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
                      std::string("800\r\n") + std::string(0x800, 'x') + "\r\n0\r\n\r\n");
  REQUIRE(r);
  CHECK(r->status == 413);
}

TEST_CASE("A client still sending a refused body gets its 413: the server drains, then closes") {
  Service svc(tight());
  Conn c(svc.port());
  const std::string body(std::size_t{16} << 20, 'x');  // more than loopback buffers take
  const bool sent = c.send("POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Length: " +
                           std::to_string(body.size()) + "\r\n\r\n" + body);
  CHECK(sent);  // not reset while sending
  auto r = c.reply();
  REQUIRE(r);
  CHECK(r->status == 413);
  CHECK(c.closed_within(testing::deadline(3s)));
}

TEST_CASE("Garbage bytes answer 400 and the server keeps serving") {
  Service svc(tight());
  for (const std::string& garbage :
       {std::string("\x01\x02\x03 nonsense\r\n\r\n"), std::string("GET /healthz HTTP/9.9\r\n\r\n"),
        std::string("GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n"),
        std::string("POST /v1/check HTTP/1.1\r\nContent-Length: -5\r\n\r\n")}) {
    Conn c(svc.port());
    auto r = c.request(garbage);
    REQUIRE(r);
    CHECK(r->status == 400);
    CHECK(r->body_json()["error"].get<std::string>().find("malformed HTTP") != std::string::npos);
    CHECK(c.closed_within(testing::deadline(2s)));
  }
  auto ok = svc.request(get("/healthz"));
  REQUIRE(ok);
  CHECK(ok->status == 200);
}

TEST_CASE("Unknown paths answer 404 and wrong methods 405, with JSON errors") {
  Service svc;
  svc.sync();
  auto r = svc.request(get("/v2/nothing"));
  REQUIRE(r);
  CHECK(r->status == 404);
  CHECK(r->body_json().contains("error"));
  r = svc.request("DELETE /v1/workloads HTTP/1.1\r\nHost: x\r\n\r\n");
  REQUIRE(r);
  CHECK(r->status == 405);
  CHECK(r->header("allow") == "GET");
  r = svc.request(get("/v1/check"));
  REQUIRE(r);
  CHECK(r->status == 405);
  r = svc.request(get("/v1/tables/default/web-1?wait=soon"));
  REQUIRE(r);
  CHECK(r->status == 400);
}

TEST_CASE("A slow-loris client is cut off when its header does not arrive in time") {
  Service svc(tight());
  Conn c(svc.port());
  REQUIRE(c.send("GET /healthz HTTP/1.1\r\n"));
  const auto t0 = Clock::now();
  bool closed = false;
  while (Clock::now() - t0 < 5s) {  // one header line every 200 ms, never the blank line
    if (!c.send("X-Drip: a\r\n") || c.closed_within(200ms)) {
      closed = true;
      break;
    }
  }
  CHECK(closed);
  CHECK(Clock::now() - t0 < testing::deadline(3s));
}

TEST_CASE("A slow body is cut off after the body timeout") {
  Service svc(tight());
  Conn c(svc.port());
  REQUIRE(c.send("POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"));
  const auto t0 = Clock::now();
  CHECK(c.closed_within(testing::deadline(4s)));
  CHECK(Clock::now() - t0 < testing::deadline(3s));
}

TEST_CASE("An idle keep-alive connection is closed after the idle timeout") {
  Service svc(tight());
  Conn c(svc.port());
  auto r = c.request(get("/healthz"));
  REQUIRE(r);
  CHECK(r->status == 200);
  const auto t0 = Clock::now();
  CHECK(c.closed_within(testing::deadline(5s)));
  CHECK(Clock::now() - t0 >= 1500ms);
}

TEST_CASE("Connections beyond the cap are refused with 503 and accepted again once one closes") {
  server::ServerOptions o;
  o.max_connections = 2;
  Service svc(o);
  auto a = std::make_unique<Conn>(svc.port());
  Conn b(svc.port());
  const auto deadline = Clock::now() + 5s;
  while (svc.server.connections() < 2 && Clock::now() < deadline) std::this_thread::sleep_for(5ms);
  REQUIRE(svc.server.connections() == 2);
  Conn refused(svc.port());
  auto r = refused.reply(testing::deadline(5s));
  REQUIRE(r);
  CHECK(r->status == 503);
  a.reset();
  while (svc.server.connections() > 1 && Clock::now() < deadline + 5s) {
    std::this_thread::sleep_for(5ms);
  }
  Conn c(svc.port());
  auto ok = c.request(get("/healthz"));
  REQUIRE(ok);
  CHECK(ok->status == 200);
}

// ---- TLS -------------------------------------------------------------------------------------

struct TlsFiles {
  testing::TempDir dir;
  std::string cert = (dir.path() / "tls.crt").string();
  std::string key = (dir.path() / "tls.key").string();
  std::string client_ca = (dir.path() / "client-ca.crt").string();
  void write(const testing::Pem& c) {
    testing::write_file(key, c.private_key);
    testing::write_file(cert, c.certificate);
  }
};

TEST_CASE("TLS serves the certificate from the files and picks up a replaced certificate") {
  TlsFiles files;
  const auto one = testing::make_self_signed("tollgate-one");
  const auto two = testing::make_self_signed("tollgate-two");
  files.write(one);
  server::ServerOptions o;
  o.tls_cert_file = files.cert;
  o.tls_key_file = files.key;
  o.tls_reload_interval = 50ms;
  Service svc(o);
  {
    Conn c(svc.port());
    REQUIRE(c.start_tls(one.certificate));
    CHECK(c.peer_common_name() == "tollgate-one");
    auto r = c.request(get("/healthz"));
    REQUIRE(r);
    CHECK(r->status == 200);
  }
  {
    Conn plain(svc.port());  // plain HTTP to a TLS port gets nothing useful
    CHECK_FALSE(plain.request(get("/healthz"), 2s));
  }
  files.write(two);
  std::string seen;
  const auto deadline = Clock::now() + 10s;
  while (Clock::now() < deadline) {
    Conn c(svc.port());
    if (c.start_tls(two.certificate)) {
      seen = c.peer_common_name();
      auto r = c.request(get("/healthz"));
      REQUIRE(r);
      CHECK(r->status == 200);
      break;
    }
    std::this_thread::sleep_for(50ms);
  }
  CHECK(seen == "tollgate-two");
}

TEST_CASE("Over TLS a long-poll is answered on a change and its connection carries on") {
  TlsFiles files;
  const auto cert = testing::make_self_signed("tollgate-one");
  files.write(cert);
  server::ServerOptions o;
  o.tls_cert_file = files.cert;
  o.tls_key_file = files.key;
  Service svc(o);
  svc.sync();
  const auto etag = svc.etag("default", "web-1");
  Conn c(svc.port());
  REQUIRE(c.start_tls(cert.certificate));
  REQUIRE(c.send(get("/v1/tables/default/web-1?wait=30", "If-None-Match: " + etag + "\r\n")));
  REQUIRE(svc.parked(1));
  svc.pub.submit(upsert(deny_web(9090), Kind::kPolicy));
  auto r = c.reply();
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body == svc.wire("default", "web-1"));
  // Two requests in one write: both come through the TLS stream after the long-poll.
  REQUIRE(c.send(get("/healthz") + get("/v1/tables/default/db-1")));
  r = c.reply();
  REQUIRE(r);
  CHECK(r->status == 200);
  r = c.reply();
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->header("etag") == svc.etag("default", "db-1"));
}

TEST_CASE("With a client CA, only clients presenting a certificate it signed are served") {
  TlsFiles files;
  const auto server_cert = testing::make_self_signed("tollgate");
  const auto client = testing::make_self_signed("agent");
  const auto stranger = testing::make_self_signed("stranger");
  files.write(server_cert);
  testing::write_file(files.client_ca, client.certificate);
  server::ServerOptions o;
  o.tls_cert_file = files.cert;
  o.tls_key_file = files.key;
  o.tls_client_ca_file = files.client_ca;
  Service svc(o);
  {
    Conn c(svc.port());
    REQUIRE(c.start_tls(server_cert.certificate, &client));
    auto r = c.request(get("/healthz"));
    REQUIRE(r);
    CHECK(r->status == 200);
  }
  for (const auto* who : {static_cast<const testing::Pem*>(nullptr), &stranger}) {
    Conn c(svc.port());
    // TLS 1.3 finishes the client's side of the handshake before the server has checked
    // the client: the refusal shows on the first read at the latest.
    const bool handshake = c.start_tls(server_cert.certificate, who);
    CHECK_FALSE((handshake && c.request(get("/healthz"), 3s)));
  }
}

// ---- the binary --------------------------------------------------------------------------------

// Whether a tollgate child on `port` reports one parked long-poll (its /metrics) in time. The
// child is another process: polled.
bool one_parked(std::uint16_t port) {
  const auto until = Clock::now() + testing::deadline(10s);
  while (Clock::now() < until) {
    auto m = testing::http_get(port, "/metrics");
    if (m && m->body.find("\ntollgate_parked_long_polls 1\n") != std::string::npos) return true;
    std::this_thread::sleep_for(20ms);
  }
  return false;
}

TEST_CASE("tollgate run serves the manifests, and SIGTERM answers a parked long-poll and exits 0") {
  testing::TempDir dir;
  const auto port_file = dir.path() / "port";
  const auto log = dir.path() / "stderr";
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 2);
    const std::string manifests = testing::source_path("examples/seed");
    ::execl(TOLLGATE_BINARY, TOLLGATE_BINARY, "run", "--manifests", manifests.c_str(), "--listen",
            "127.0.0.1:0", "--port-file", port_file.c_str(), nullptr);
    ::_exit(127);
  }
  auto kill_child = [&] {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  };
  std::uint16_t port = 0;
  const auto deadline = Clock::now() + 30s;
  while (Clock::now() < deadline && port == 0) {
    const auto text = testing::read_file(port_file);
    if (!text.empty()) port = static_cast<std::uint16_t>(std::stoi(text));
    std::this_thread::sleep_for(20ms);
  }
  if (port == 0) kill_child();
  INFO(testing::read_file(log));
  REQUIRE(port != 0);
  bool ready = false;
  while (Clock::now() < deadline && !ready) {
    Conn c(port);
    auto r = c.request(get("/readyz"));
    ready = r && r->status == 200;
    if (!ready) std::this_thread::sleep_for(50ms);
  }
  if (!ready) kill_child();
  REQUIRE(ready);
  Conn c(port);
  auto list = c.request(get("/v1/workloads"));
  REQUIRE(list);
  REQUIRE(list->status == 200);
  const auto w = list->body_json()["workloads"].at(0);
  const std::string target = "/v1/tables/" + w["namespace"].get<std::string>() + "/" +
                             w["pod"].get<std::string>() + "?wait=60";
  REQUIRE(c.send(get(target, "If-None-Match: " + w["etag"].get<std::string>() + "\r\n")));
  REQUIRE(one_parked(port));
  const auto t0 = Clock::now();
  ::kill(pid, SIGTERM);
  auto r = c.reply(testing::deadline(10s));
  REQUIRE(r);
  CHECK(r->status == 304);
  int status = -1;
  ::waitpid(pid, &status, 0);
  CHECK(Clock::now() - t0 < testing::deadline(10s));
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("With --log-level debug, tollgate run logs each publish and each long-poll it wakes") {
  testing::TempDir dir;
  const auto manifests = dir.path() / "manifests";
  std::filesystem::copy(testing::source_path("examples/seed"), manifests);
  const auto port_file = dir.path() / "port";
  testing::Child child;
  REQUIRE(child.spawn(TOLLGATE_BINARY,
                      {"run", "--manifests", manifests.string(), "--listen", "127.0.0.1:0",
                       "--port-file", port_file.string(), "--log-level", "debug"},
                      (dir.path() / "stderr").string()));
  const auto port = testing::Child::wait_for_port(port_file.string(), testing::deadline(30s));
  INFO(child.log());
  REQUIRE(port != 0);
  std::optional<testing::HttpReply> list;
  const auto until = Clock::now() + testing::deadline(30s);
  while (Clock::now() < until && !(list && list->status == 200)) {
    list = testing::http_get(port, "/v1/workloads");
    if (!(list && list->status == 200)) std::this_thread::sleep_for(20ms);  // another process
  }
  REQUIRE(list);
  REQUIRE(list->status == 200);
  const auto w = json::parse(list->body)["workloads"].at(0);
  const std::string ns = w["namespace"].get<std::string>();
  Conn c(port);
  REQUIRE(c.send(get("/v1/tables/" + ns + "/" + w["pod"].get<std::string>() + "?wait=60",
                     "If-None-Match: " + w["etag"].get<std::string>() + "\r\n")));
  REQUIRE(child.log().find("\"msg\":\"snapshot published\"") != std::string::npos);
  // Once parked (the child's metrics say so), a DENY for the whole namespace changes the pod's
  // table and wakes the poll.
  REQUIRE(one_parked(port));
  testing::write_file(manifests / "zz-deny.yaml",
                      "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
                      "metadata: {name: debug-deny, namespace: " +
                          ns + "}\nspec: {action: DENY, rules: [{}]}\n");
  auto r = c.reply(testing::deadline(10s));
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK_THAT(child.log(),
             Catch::Contains("\"msg\":\"long-poll woken by a publish\",\"pod\":\"" + ns + "/"));
}

}  // namespace
}  // namespace tollgate

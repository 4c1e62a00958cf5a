// The agent's HTTP endpoints (src/agent/http_service.cc), the metrics they feed and the
// decision log, driven without sockets: requests as the HTTP core hands them over.
#include "tollgate/agent/http_service.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "support/fixtures.h"
#include "support/run.h"
#include "tollgate/agent/decision_log.h"
#include "tollgate/compile/compile.h"

using namespace tollgate;
using nlohmann::json;

namespace {

struct NoExchange final : http::Exchange {
  std::shared_ptr<http::Waker> waker() override { return nullptr; }
};

struct Call {
  std::string method = "GET";
  std::string target = "/v1/authz";
  std::vector<std::pair<std::string, std::string>> headers;
};

struct Reply {
  int status = 0;
  std::string headers, body;
  std::string header(const std::string& name) const {
    const auto pos = headers.find(name + ": ");
    if (pos == std::string::npos) return "(absent)";
    const auto start = pos + name.size() + 2;
    return headers.substr(start, headers.find("\r\n", start) - start);
  }
};

struct Agent {
  agent::Authorizer authorizer;
  agent::AgentMetrics metrics;
  std::unique_ptr<agent::DecisionLog> log;
  agent::SyncStatus sync;
  std::unique_ptr<agent::DecisionObserver> observer;
  std::unique_ptr<agent::HttpService> service;

  explicit Agent(agent::DecisionLog* decision_log = nullptr) {
    observer = std::make_unique<agent::DecisionObserver>(metrics, authorizer, decision_log);
    service = std::make_unique<agent::HttpService>(
        authorizer, metrics, *observer, agent::MappingOptions{}, [this] { return sync; });
  }
  void seed_table() {
    auto t = std::make_shared<agent::ActiveTable>();
    t->table = compile::compile_table(testing::mk_policies(R"(
kind: AuthorizationPolicy
metadata: {name: allow-get, namespace: default}
spec: {rules: [{to: [{operation: {methods: [GET]}}]}]}
---
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec: {action: DENY, rules: [{to: [{operation: {paths: ["/admin*"]}}]}]}
)"),
                                      testing::mk_workload("default"), {});
    authorizer.activate(std::move(t));
  }
  Reply call(const Call& c) {
    std::vector<http::Header> hs;
    for (const auto& [n, v] : c.headers) hs.push_back({n, v});
    http::Request r;
    r.method = c.method;
    r.target = c.target;
    r.headers = hs;
    NoExchange x;
    auto a = service->handle(r, x);
    REQUIRE(a.later == nullptr);
    return {a.response.status, a.response.headers, std::string(a.response.body_bytes())};
  }
};

Call forward(const std::string& method, const std::string& uri) {
  return {"GET", "/v1/authz", {{"X-Original-Method", method}, {"X-Original-URI", uri}}};
}

}  // namespace

TEST_CASE("the authorization endpoints answer 200 or 403 with the deciding policy") {
  Agent a;
  a.seed_table();
  auto r = a.call(forward("GET", "/x"));
  CHECK(r.status == 200);
  CHECK(r.header("X-Tollgate-Decision") == "ALLOW");
  CHECK(r.header("X-Tollgate-Policy") == "default/allow-get");
  CHECK(r.body.empty());
  r = a.call(forward("GET", "/admin/users"));
  CHECK(r.status == 403);
  CHECK(r.header("X-Tollgate-Policy") == "default/deny-admin");
  CHECK(json::parse(r.body)["decision"] == "DENY");
  // Envoy's http_service: the request's own method and the path after the prefix.
  r = a.call({"GET", "/v1/authz/envoy/admin/x?y=1", {}});
  CHECK(r.status == 403);
  CHECK(r.header("X-Tollgate-Policy") == "default/deny-admin");
  r = a.call({"GET", "/v1/authz/envoy/ok", {}});
  CHECK(r.status == 200);
  r = a.call({"POST", "/v1/authz/envoy/ok", {}});
  CHECK(r.status == 403);
  CHECK(r.header("X-Tollgate-Policy") == "(absent)");
}

TEST_CASE("a request the agent cannot read is denied with its reason, never 5xx") {
  Agent a;
  a.seed_table();
  for (const Call& c :
       {Call{"GET", "/v1/authz", {}}, Call{"GET", "/v1/authz", {{"X-Original-Method", "GET"}}},
        Call{"GET", "/v1/authz/envoy", {}}, Call{"GET", "/v1/authz/envoy?x", {}},
        Call{"GET",
             "/v1/authz",
             {{"X-Original-Method", "GET"},
              {"X-Original-URI", "/x"},
              {"X-Forwarded-Tls-Client-Cert", "not%20a%20certificate"}}}}) {
    INFO(c.target << " with " << c.headers.size() << " headers");
    const auto r = a.call(c);
    CHECK(r.status == 403);
    CHECK(r.header("X-Tollgate-Reason") == "unreadable-request");
  }
  const std::string m = a.metrics.render(a.authorizer, std::chrono::system_clock::now());
  CHECK_THAT(
      m, Catch::Contains("tollgate_agent_denials_without_table_decision_total{reason=\"unreadable-"
                         "request\"} 5"));
}

TEST_CASE("without a table: 403 no-table, and /readyz is 503 until a table is active") {
  Agent a;
  a.sync.last_error = "cannot connect to http://127.0.0.1:1: Connection refused";
  auto r = a.call(forward("GET", "/x"));
  CHECK(r.status == 403);
  CHECK(r.header("X-Tollgate-Reason") == "no-table");
  r = a.call({"GET", "/readyz", {}});
  CHECK(r.status == 503);
  auto body = json::parse(r.body);
  CHECK(body["ready"] == false);
  CHECK(body["controller"] == "unreachable");
  CHECK(body["error"] == a.sync.last_error);
  a.seed_table();
  a.sync = {true, false, true, "", ""};
  r = a.call({"GET", "/readyz", {}});
  CHECK(r.status == 200);
  body = json::parse(r.body);
  CHECK(body["ready"] == true);
  CHECK(body["source"] == "fetched");
  CHECK(body["table"] == a.authorizer.active()->table.hash);
  CHECK(a.call({"GET", "/healthz", {}}).status == 200);
  CHECK(a.call({"GET", "/v1/tables/default/x", {}}).status == 404);
}

TEST_CASE("metrics count decisions by policy, time them, and describe the active table") {
  Agent a;
  a.seed_table();
  for (int i = 0; i < 3; ++i) a.call(forward("GET", "/x"));
  a.call(forward("GET", "/admin"));
  a.call(forward("DELETE", "/x"));
  CHECK(a.metrics.decisions(true, "default/allow-get") == 3);
  CHECK(a.metrics.decisions(false, "default/deny-admin") == 1);
  CHECK(a.metrics.decisions(false, "") == 1);
  a.metrics.synced_at(std::chrono::system_clock::now() - std::chrono::seconds(42));
  const auto r = a.call({"GET", "/metrics", {}});
  CHECK(r.status == 200);
  CHECK_THAT(r.body, Catch::Contains("tollgate_agent_decisions_total{decision=\"allow\",policy="
                                     "\"default/allow-get\"} 3"));
  CHECK_THAT(r.body,
             Catch::Contains("tollgate_agent_decisions_total{decision=\"deny\",policy=\"\"} 1"));
  CHECK_THAT(r.body,
             Catch::Contains("tollgate_agent_decision_duration_seconds_bucket{le=\"+Inf\"} 5"));
  CHECK_THAT(r.body, Catch::Contains("tollgate_agent_decision_duration_seconds_count 5"));
  CHECK_THAT(r.body,
             Catch::Contains("tollgate_agent_table_info{hash=\"" +
                             a.authorizer.active()->table.hash + "\",source=\"fetched\"} 1"));
  CHECK_THAT(r.body, Catch::Contains("tollgate_agent_table_age_seconds 42"));
  CHECK_THAT(r.body, Catch::Contains("tollgate_agent_sync_errors_total{kind=\"persist\"} 0"));
}

TEST_CASE("the decision log keeps header values only for its allow-list") {
  testing::TempDir dir;
  const std::string path = (dir.path() / "decisions.jsonl").string();
  auto log = agent::DecisionLog::open(path, {"User-Agent"});
  REQUIRE(log.ok());
  Agent a(log->get());
  a.seed_table();
  a.call({"GET",
          "/v1/authz",
          {{"X-Original-Method", "GET"},
           {"X-Original-URI", "/admin?q=1"},
           {"User-Agent", "curl/8"},
           {"Authorization", "Bearer secret-token"},
           {"X-Real-IP", "10.0.0.7"}}});
  a.call({"GET", "/v1/authz", {}});  // unreadable
  log->reset();                      // closes the file
  std::vector<json> lines;
  std::istringstream in(testing::read_file(path));
  for (std::string l; std::getline(in, l);) lines.push_back(json::parse(l));
  REQUIRE(lines.size() == 2);
  const json& first = lines[0];
  CHECK(first["table"] == a.authorizer.active()->table.hash);
  CHECK(first["request"]["method"] == "GET");
  CHECK(first["request"]["path"] == "/admin?q=1");
  CHECK(first["request"]["sourceIp"] == "10.0.0.7");
  CHECK(first["request"]["headers"] == json{{"user-agent", "curl/8"}});
  CHECK(first["decision"]["policy"] == "default/deny-admin");
  CHECK(first["id"] != lines[1]["id"]);
  const std::string all = testing::read_file(path);
  CHECK(all.find("secret-token") == std::string::npos);
  CHECK(first["request"]["redactedHeaders"].dump().find("authorization") != std::string::npos);
  CHECK(lines[1]["request"].is_null());
  CHECK(lines[1]["decision"]["decision"] == "DENY");
}

TEST_CASE("a renamed decision log is reopened at its path") {
  testing::TempDir dir;
  const std::string path = (dir.path() / "d.jsonl").string();
  auto log = agent::DecisionLog::open(path, {}, std::chrono::milliseconds(0));
  REQUIRE(log.ok());
  agent::Answer deny;
  deny.body = R"({"decision":"DENY"})";
  (*log)->write(nullptr, deny, "");
  std::filesystem::rename(path, path + ".1");
  (*log)->write(nullptr, deny, "");
  (*log)->write(nullptr, deny, "");
  const std::string before = testing::read_file(path + ".1");
  CHECK(std::count(before.begin(), before.end(), '\n') == 1);
  const std::string now = testing::read_file(path);
  CHECK(std::count(now.begin(), now.end(), '\n') == 2);
}

// `tollgate agent` as a process beside `tollgate run --manifests`: the decisions match the
// controller's POST /v1/check, the table survives the controller's death and the agent's
// restart, a policy change reaches the agent, the gRPC listener decides the same, and every
// process stops cleanly.
#include <grpcpp/grpcpp.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "envoy/service/auth/v3/external_auth.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "support/child.h"
#include "support/run.h"
#include "tollgate/agent/table_store.h"

using namespace tollgate;
using namespace tollgate::testing;
using namespace std::chrono_literals;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr auto kStart = 60s;  // generous: CI runs this under ASan on a shared 2-core machine

void copy_dir(const fs::path& from, const fs::path& to) {
  fs::create_directories(to);
  for (const auto& e : fs::directory_iterator(from)) {
    if (e.path().extension() == ".yaml") {
      fs::copy_file(e.path(), to / e.path().filename(), fs::copy_options::overwrite_existing);
    }
  }
}

struct Controller {
  Child proc;
  std::uint16_t port = 0;
  Controller(const TempDir& dir, const fs::path& manifests) {
    const auto port_file = (dir.path() / "controller.port").string();
    fs::remove(port_file);
    REQUIRE(proc.spawn(TOLLGATE_BINARY,
                       {"run", "--manifests", manifests.string(), "--listen", "127.0.0.1:0",
                        "--port-file", port_file},
                       (dir.path() / "controller.log").string()));
    port = Child::wait_for_port(port_file, kStart);
    REQUIRE(port != 0);
    REQUIRE(eventually([&] {
      auto r = http_get(port, "/readyz");
      return r && r->status == 200;
    }));
  }
};

struct Agent {
  Child proc;
  std::uint16_t port = 0, grpc_port = 0;
  Agent(const TempDir& dir, std::uint16_t controller_port, const std::string& pod = "backend",
        const std::string& name = "agent") {
    const auto port_file = (dir.path() / (name + ".port")).string();
    const auto grpc_file = (dir.path() / (name + ".grpc")).string();
    fs::remove(port_file);
    fs::remove(grpc_file);
    REQUIRE(proc.spawn(TOLLGATE_BINARY,
                       {"agent",
                        "--controller",
                        "http://127.0.0.1:" + std::to_string(controller_port),
                        "--namespace",
                        "default",
                        "--pod",
                        pod,
                        "--state-dir",
                        (dir.path() / (name + "-state")).string(),
                        "--listen",
                        "127.0.0.1:0",
                        "--port-file",
                        port_file,
                        "--grpc-listen",
                        "127.0.0.1:0",
                        "--grpc-port-file",
                        grpc_file,
                        "--wait",
                        "20",
                        "--decision-log",
                        (dir.path() / (name + "-decisions.jsonl")).string()},
                       (dir.path() / (name + ".log")).string()));
    port = Child::wait_for_port(port_file, kStart);
    grpc_port = Child::wait_for_port(grpc_file, kStart);
    REQUIRE(port != 0);
    REQUIRE(grpc_port != 0);
  }
  json readyz() const {
    auto r = http_get(port, "/readyz");
    REQUIRE(r);
    auto j = json::parse(r->body);
    j["status"] = r->status;
    return j;
  }
  bool ready() const {
    auto r = http_get(port, "/readyz");
    return r && r->status == 200;
  }
};

struct Probe {
  std::string method, path, principal, ip;
};

// What the agent answers for `p` through /v1/authz: "ALLOW|policy" or "DENY|policy".
std::string agent_decision(std::uint16_t port, const Probe& p) {
  std::string h = "X-Original-Method: " + p.method + "\r\nX-Original-URI: " + p.path + "\r\n";
  if (!p.principal.empty()) h += "X-Forwarded-Client-Cert: URI=spiffe://" + p.principal + "\r\n";
  if (!p.ip.empty()) h += "X-Real-IP: " + p.ip + "\r\n";
  auto r = http_get(port, "/v1/authz", h);
  REQUIRE(r);
  REQUIRE((r->status == 200 || r->status == 403));
  const std::string decision = header_of(r->headers, "X-Tollgate-Decision");
  CHECK(decision == (r->status == 200 ? "ALLOW" : "DENY"));
  return decision + "|" + header_of(r->headers, "X-Tollgate-Policy");
}

// What the controller's POST /v1/check decides for the same request.
std::string check_decision(std::uint16_t port, const Probe& p) {
  json req = {{"protocol", "http"}, {"method", p.method}, {"path", p.path}};
  if (!p.principal.empty()) req["source"]["principal"] = p.principal;
  if (!p.ip.empty()) req["source"]["ip"] = p.ip;
  const json body = {{"workload", {{"namespace", "default"}, {"pod", "backend"}}},
                     {"request", req}};
  auto r =
      http_request(port, "POST", "/v1/check", "Content-Type: application/json\r\n", body.dump());
  REQUIRE(r);
  REQUIRE(r->status == 200);
  const json d = json::parse(r->body);
  return d["decision"].get<std::string>() + "|" +
         (d["policy"].is_string() ? d["policy"].get<std::string>() : "");
}

std::vector<Probe> generated_probes(int n) {
  std::mt19937 rng(20261202);
  const std::vector<std::string> methods = {"GET",    "GET", "GET",  "POST",
                                            "DELETE", "PUT", "HEAD", "get"};
  const std::vector<std::string> paths = {"/api/v1/data",
                                          "/api/v1/data/x",
                                          "/api/v1/data?limit=5",
                                          "/",
                                          "/admin",
                                          "/API/v1/data",
                                          "/api//v1/data",
                                          "/api/v1/./data",
                                          "/api/v1/x/../data",
                                          "/api/v1/%64ata",
                                          "/api/v1/data#f",
                                          "/api/v1/data/%2F..",
                                          "/other?x=/api/v1/data"};
  const std::vector<std::string> principals = {
      "", "cluster.local/ns/default/sa/frontend", "cluster.local/ns/default/sa/frontend",
      "cluster.local/ns/default/sa/backend", "cluster.local/ns/other/sa/frontend"};
  const std::vector<std::string> ips = {"", "10.1.2.3", "192.168.0.9", "2001:db8::1"};
  std::vector<Probe> out;
  for (int i = 0; i < n; ++i) {
    out.push_back({methods[rng() % methods.size()], paths[rng() % paths.size()],
                   principals[rng() % principals.size()], ips[rng() % ips.size()]});
  }
  return out;
}

std::string seed_dir(const char* which) { return source_path(std::string("examples/") + which); }

}  // namespace

TEST_CASE("the agent decides every generated request as the controller's /v1/check does") {
  TempDir dir;
  copy_dir(seed_dir("seed-fixed"), dir.path() / "manifests");
  Controller controller(dir, dir.path() / "manifests");
  Agent agent(dir, controller.port);
  REQUIRE(eventually([&] { return agent.ready(); }));
  int allowed = 0;
  for (const Probe& p : generated_probes(300)) {
    INFO(p.method << " " << p.path << " from " << p.principal << " at " << p.ip);
    const std::string got = agent_decision(agent.port, p);
    CHECK(got == check_decision(controller.port, p));
    allowed += got.starts_with("ALLOW") ? 1 : 0;
  }
  CHECK(allowed > 20);  // the generator reaches both outcomes
  CHECK(agent.proc.stop() == 0);
  CHECK(controller.proc.stop() == 0);
  // Every decision was logged, one JSON line each.
  std::ifstream log(dir.path() / "agent-decisions.jsonl");
  int lines = 0;
  for (std::string l; std::getline(log, l); ++lines) CHECK(json::parse(l).contains("decision"));
  CHECK(lines == 300);
}

TEST_CASE("the agent keeps deciding without its controller, and a restart restores the table") {
  TempDir dir;
  copy_dir(seed_dir("seed"), dir.path() / "manifests");
  const Probe frontend_get{"GET", "/api/v1/data", "cluster.local/ns/default/sa/frontend", ""};
  std::uint16_t dead_port = 0;
  std::string hash;
  {
    Controller controller(dir, dir.path() / "manifests");
    dead_port = controller.port;
    Agent agent(dir, controller.port);
    REQUIRE(eventually([&] { return agent.ready(); }));
    hash = agent.readyz()["table"];
    CHECK(agent_decision(agent.port, frontend_get) == "DENY|default/deny-all-backend");
    REQUIRE(controller.proc.stop(SIGKILL) == 128 + SIGKILL);
    REQUIRE(eventually([&] { return agent.readyz()["controller"] == "unreachable"; }));
    CHECK(agent_decision(agent.port, frontend_get) == "DENY|default/deny-all-backend");
    CHECK(agent.readyz()["status"] == 200);
    CHECK(agent.proc.stop() == 0);
  }
  // The saved file landed, and is the table the agent enforced.
  auto saved = agent::load_table((dir.path() / "agent-state").string(), "default", "backend");
  REQUIRE(saved.ok());
  CHECK(saved->table.hash == hash);
  // Restarted while the controller is still gone: the saved table, ready, and said so.
  Agent again(dir, dead_port);
  REQUIRE(eventually([&] { return again.ready(); }));
  const json r = again.readyz();
  CHECK(r["source"] == "restored");
  CHECK(r["table"] == hash);
  CHECK(agent_decision(again.port, frontend_get) == "DENY|default/deny-all-backend");
  CHECK_THAT(again.proc.log(), Catch::Contains("enforcing the table saved in the state directory"));
  auto metrics = http_get(again.port, "/metrics");
  REQUIRE(metrics);
  CHECK_THAT(metrics->body, Catch::Contains("source=\"restored\"} 1"));
  CHECK(again.proc.stop() == 0);
}

TEST_CASE("an agent whose pod the controller does not know denies everything: no-table") {
  TempDir dir;
  copy_dir(seed_dir("seed"), dir.path() / "manifests");
  Controller controller(dir, dir.path() / "manifests");
  Agent agent(dir, controller.port, "no-such-pod");
  REQUIRE(eventually([&] { return agent.readyz()["error"].is_string(); }));
  const json r = agent.readyz();
  CHECK(r["status"] == 503);
  CHECK(r["table"].is_null());
  CHECK_THAT(r["error"].get<std::string>(), Catch::Contains("404"));
  auto a = http_get(agent.port, "/v1/authz", "X-Original-Method: GET\r\nX-Original-URI: /\r\n");
  REQUIRE(a);
  CHECK(a->status == 403);
  CHECK(header_of(a->headers, "X-Tollgate-Reason") == "no-table");
  CHECK(agent.proc.stop() == 0);
}

TEST_CASE("a policy change in the controller reaches the agent's decisions") {
  TempDir dir;
  const fs::path manifests = dir.path() / "manifests";
  copy_dir(seed_dir("seed"), manifests);
  Controller controller(dir, manifests);
  Agent agent(dir, controller.port);
  REQUIRE(eventually([&] { return agent.ready(); }));
  const Probe frontend_get{"GET", "/api/v1/data", "cluster.local/ns/default/sa/frontend", ""};
  CHECK(agent_decision(agent.port, frontend_get) == "DENY|default/deny-all-backend");
  // The seed article's fix: drop the rules: [{}] DENY policy.
  fs::remove(manifests / "deny-all-backend.yaml");
  REQUIRE(eventually([&] {
    return agent_decision(agent.port, frontend_get) == "ALLOW|default/allow-frontend-get-data";
  }));
  CHECK(agent.proc.stop() == 0);
  CHECK(controller.proc.stop() == 0);
}

TEST_CASE("the agent's gRPC listener decides as its HTTP endpoint, and reports health") {
  namespace auth = envoy::service::auth::v3;
  TempDir dir;
  copy_dir(seed_dir("seed-fixed"), dir.path() / "manifests");
  Controller controller(dir, dir.path() / "manifests");
  Agent agent(dir, controller.port);
  REQUIRE(eventually([&] { return agent.ready(); }));
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(agent.grpc_port),
                                     grpc::InsecureChannelCredentials());
  auto stub = auth::Authorization::NewStub(channel);
  auto health = grpc::health::v1::Health::NewStub(channel);
  grpc::health::v1::HealthCheckRequest hreq;
  grpc::health::v1::HealthCheckResponse hres;
  grpc::ClientContext hctx;
  hctx.set_deadline(std::chrono::system_clock::now() + 30s);
  REQUIRE(health->Check(&hctx, hreq, &hres).ok());
  CHECK(hres.status() == grpc::health::v1::HealthCheckResponse::SERVING);
  for (const Probe& p : generated_probes(60)) {
    if (p.path.find('#') != std::string::npos) continue;  // Envoy never forwards a fragment
    INFO(p.method << " " << p.path << " from " << p.principal);
    auth::CheckRequest req;
    auto* attrs = req.mutable_attributes();
    if (!p.principal.empty()) attrs->mutable_source()->set_principal("spiffe://" + p.principal);
    auto* http = attrs->mutable_request()->mutable_http();
    http->set_method(p.method);
    http->set_path(p.path);
    http->set_host("backend");
    auth::CheckResponse res;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 30s);
    REQUIRE(stub->Check(&ctx, req, &res).ok());  // a decision is never a gRPC error
    const std::string expected =
        check_decision(controller.port, {p.method, p.path, p.principal, ""});
    CHECK((res.status().code() == 0) == expected.starts_with("ALLOW"));
  }
  CHECK(agent.proc.stop() == 0);
}

TEST_CASE("an agent that cannot start says why and exits 2") {
  TempDir dir;
  const std::string state = (dir.path() / "s").string();
  struct Case {
    std::string args, message;
  };
  for (const Case& c : std::vector<Case>{
           {"--controller ftp://x --namespace default --pod p --state-dir " + state,
            "--controller"},
           {"--controller http://127.0.0.1:1 --namespace default --pod 'a/b' --state-dir " + state,
            "the pod is not known"},
           {"--controller http://127.0.0.1:1 --namespace default --pod p --state-dir " + state +
                " --decision-log /nonexistent-dir/d.jsonl",
            "--decision-log /nonexistent-dir/d.jsonl"},
           {"--controller http://127.0.0.1:1 --namespace default --pod p --state-dir " + state +
                " --token-file /nonexistent-token",
            "--token-file /nonexistent-token"},
           {"--controller https://127.0.0.1:1 --controller-ca /nonexistent-ca --namespace default "
            "--pod p --state-dir " +
                state,
            "--controller-ca"}}) {
    INFO(c.args);
    const auto r = run_tollgate("agent " + c.args);
    CHECK(r.status == 2);
    CHECK_THAT(r.err, Catch::Contains(c.message));
  }
}

// bench/eval: decisions per second of the engine for tables of 10 to 10,000 rule values,
// a 10-rule table, and `tollgate eval --jsonl` on a stream of 100,000 requests.
// Prints figures and how they compare with the targets; exits 1 only if the CLI fails.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "tollgate/compile/compile.h"
#include "tollgate/eval/evaluate.h"
#include "tollgate/policy/parse.h"

using namespace tollgate;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

double g_seconds = 0.5;

json policy_json(const std::string& name, const std::string& action, json rules) {
  return {{"apiVersion", "security.istio.io/v1"},
          {"kind", "AuthorizationPolicy"},
          {"metadata", {{"name", name}, {"namespace", "default"}}},
          {"spec", {{"action", action}, {"rules", std::move(rules)}}}};
}

std::string principal(int k) {
  return "cluster.local/ns/ns-" + std::to_string(k) + "/sa/sa-" + std::to_string(k);
}

compile::DecisionTable table_of(const std::vector<json>& policies) {
  std::vector<policy::Policy> ps;
  for (const auto& p : policies) ps.push_back(policy::parse_policy(p));
  policy::Workload w;
  w.namespace_ = "default";
  w.labels = {{"app", "backend"}};
  return compile::compile_table(ps, w, {});
}

struct Requests {
  std::vector<eval::Request> raw;
  std::deque<eval::PreparedRequest> prepared;  // not copyable: built in place
};

Requests requests(int principals, const compile::DecisionTable& t) {
  Requests r;
  std::mt19937 rng(42);
  for (int i = 0; i < 1024; ++i) {
    json j = {{"protocol", "http"},
              {"method", i % 3 == 0 ? "POST" : "GET"},
              {"path", i % 5 == 0 ? "/admin/x" : "/api/v1/items/" + std::to_string(i)},
              {"host", "backend.default.svc.cluster.local"},
              {"port", 8080},
              {"source", {{"ip", "10.1." + std::to_string(i % 200) + ".7"}}}};
    const int kind = i % 4;  // 2/4 matching principal, 1/4 unknown, 1/4 plaintext
    if (kind < 2) j["source"]["principal"] = principal(static_cast<int>(rng() % principals));
    if (kind == 2) j["source"]["principal"] = "cluster.local/ns/x/sa/unknown";
    r.raw.push_back(*eval::parse_request(j));
  }
  for (const auto& q : r.raw) eval::prepare(q, t.path_normalization, r.prepared.emplace_back());
  return r;
}

// Decisions per second of evaluate() over prepared requests (prepare=false), or of
// prepare()+evaluate() from parsed requests (prepare=true).
double rate(const compile::DecisionTable& t, Requests& r, bool with_prepare) {
  std::size_t n = 0, allowed = 0;
  const auto start = Clock::now();
  const auto until = start + std::chrono::duration<double>(g_seconds);
  eval::PreparedRequest scratch;
  while (Clock::now() < until) {
    for (std::size_t i = 0; i < r.raw.size(); ++i) {
      if (with_prepare) {
        eval::prepare(r.raw[i], t.path_normalization, scratch);
        allowed += eval::evaluate(t, scratch).allowed;
      } else {
        allowed += eval::evaluate(t, r.prepared[i]).allowed;
      }
    }
    n += r.raw.size();
  }
  const double secs = std::chrono::duration<double>(Clock::now() - start).count();
  if (allowed == n + 1) std::printf("impossible\n");  // keep `allowed` alive
  return static_cast<double>(n) / secs;
}

std::string write_stream(const std::filesystem::path& file, int lines, int distinct_every) {
  std::ofstream out(file);
  std::mt19937 rng(7);
  const char* methods[] = {"GET", "POST", "PUT"};
  const char* paths[] = {"/api/v1/data", "/api/v1/items?id=3", "/admin", "/healthz"};
  for (int i = 0; i < lines; ++i) {
    const int version = distinct_every > 0 ? i / distinct_every : 0;
    json allow = policy_json(
        "allow-frontend", "ALLOW",
        json::array({{{"from", {{{"source", {{"principals", {principal(1), principal(2)}}}}}}},
                      {"to",
                       {{{"operation",
                          {{"methods", {"GET"}},
                           {"paths", {"/api/*", "/v" + std::to_string(version)}}}}}}}}}));
    json deny = policy_json("deny-admin", "DENY",
                            json::array({{{"to", {{{"operation", {{"paths", {"/admin*"}}}}}}}}}));
    json req = {{"protocol", "http"},
                {"source",
                 {{"principal", principal(static_cast<int>(rng() % 4))},
                  {"ip", "10.0.0." + std::to_string(rng() % 250)}}},
                {"method", methods[rng() % 3]},
                {"path", paths[rng() % 4]},
                {"host", "backend.default.svc.cluster.local"},
                {"port", 8080}};
    out << json{{"policies", {allow, deny}},
                {"workload", {{"namespace", "default"}, {"labels", {{"app", "backend"}}}}},
                {"request", req}}
               .dump()
        << "\n";
  }
  return file.string();
}

// Lines per second of `tollgate eval --jsonl`, or a negative number if it failed.
double jsonl_rate(const std::string& input, int lines) {
  const std::string cmd =
      std::string("'") + TOLLGATE_BINARY + "' eval --jsonl < '" + input + "' > /dev/null";
  const auto start = Clock::now();
  const int status = std::system(cmd.c_str());
  const double secs = std::chrono::duration<double>(Clock::now() - start).count();
  if (status != 0) return -1;
  return lines / secs;
}

const char* verdict(bool ok) { return ok ? "PASS" : "FAIL"; }

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1) g_seconds = std::atof(argv[1]);
  std::printf("bench/eval: %.2f s per engine measurement, one thread\n\n", g_seconds);

  // A. One ALLOW rule listing N principals (exact values: hashed, not scanned).
  double rate10 = 0, rate10000 = 0;
  for (int n : {10, 100, 1000, 10000}) {
    json values = json::array();
    for (int k = 0; k < n; ++k) values.push_back(principal(k));
    const auto t = table_of(
        {policy_json("allow-many", "ALLOW",
                     json::array({{{"from", {{{"source", {{"principals", values}}}}}}}}))});
    auto r = requests(n, t);
    const double d = rate(t, r, false);
    const double dp = rate(t, r, true);
    if (n == 10) rate10 = d;
    if (n == 10000) rate10000 = d;
    std::printf("engine  principals=%-6d decisions/s=%12.0f   with prepare()=%12.0f\n", n, d, dp);
  }

  // B. A typical 10-rule table: 9 ALLOW rules (principals + methods + paths + ports), 1 DENY.
  std::vector<json> ten;
  for (int i = 0; i < 9; ++i) {
    ten.push_back(policy_json(
        "allow-" + std::to_string(i), "ALLOW",
        json::array({{{"from", {{{"source", {{"principals", {principal(i), principal(i + 50)}}}}}}},
                      {"to",
                       {{{"operation",
                          {{"methods", {"GET", "HEAD"}},
                           {"paths", {"/api/v1/items/*", "/v" + std::to_string(i)}},
                           {"ports", {"8080"}}}}}}}}})));
  }
  ten.push_back(policy_json(
      "deny-admin", "DENY",
      json::array(
          {{{"to", {{{"operation", {{"paths", {"/admin*"}}, {"notMethods", {"GET"}}}}}}}}})));
  const auto t10 = table_of(ten);
  auto r10 = requests(12, t10);
  const double rate_rules = rate(t10, r10, false);
  const double rate_rules_prep = rate(t10, r10, true);
  std::printf("engine  10-rule table   decisions/s=%12.0f   with prepare()=%12.0f\n", rate_rules,
              rate_rules_prep);

  // C. The CLI on 100,000 lines.
  const auto dir = std::filesystem::temp_directory_path() / "tollgate-bench-eval";
  std::filesystem::create_directories(dir);
  constexpr int kLines = 100'000;
  const auto same = write_stream(dir / "same.jsonl", kLines, 0);
  const auto varied = write_stream(dir / "varied.jsonl", kLines, 1000);
  const double cli_same = jsonl_rate(same, kLines);
  const double cli_varied = jsonl_rate(varied, kLines);
  std::filesystem::remove_all(dir);
  std::printf("cli     eval --jsonl, same policies        requests/s=%10.0f\n", cli_same);
  std::printf("cli     eval --jsonl, policies change /1000 requests/s=%10.0f\n", cli_varied);

  const double ratio = rate10000 > 0 ? rate10 / rate10000 : 0;
  std::printf("\ntargets\n");
  std::printf("  %s  10-rule table >= 5,000,000 decisions/s on one core: %.0f\n",
              verdict(rate_rules >= 5e6), rate_rules);
  std::printf("  %s  10,000-principal rule within 2x of 10-principal: %.2fx slower\n",
              verdict(ratio <= 2.0), ratio);
  std::printf("  %s  eval --jsonl >= 200,000 requests/s: %.0f\n", verdict(cli_same >= 2e5),
              cli_same);
  return cli_same < 0 || cli_varied < 0 ? 1 : 0;
}

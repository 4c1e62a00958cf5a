// Property: tollgate's compiled tables, and the same tables read back from their wire format,
// decide exactly as the simple reference interpreter (test/support/reference_model.cc) on
// random policies and requests drawn from small pools, so that rules really match: the same
// ALLOW/DENY, the same deciding policy, and the same inputs refused.
#include <rapidcheck.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <stdexcept>

#include "support/fixtures.h"
#include "support/reference_model.h"
#include "support/run.h"

using nlohmann::json;
using tollgate::testing::reference_decide;

namespace {

template <typename T>
rc::Gen<T> one_of(std::vector<T> pool) {
  return rc::gen::elementOf(pool);
}

rc::Gen<json> values_of(std::vector<std::string> pool) {
  return rc::gen::map(rc::gen::container<std::vector<std::string>>(
                          *rc::gen::inRange<std::size_t>(1, 4), rc::gen::elementOf(pool)),
                      [](const std::vector<std::string>& v) { return json(v); });
}

const std::vector<std::string> kPrincipals = {"cluster.local/ns/foo/sa/a",
                                              "cluster.local/ns/foo/sa/b",
                                              "cluster.local/ns/bar/sa/a",
                                              "cluster.local/ns/foo/*",
                                              "*/sa/a",
                                              "*"};
const std::vector<std::string> kNamespaces = {"foo", "bar", "*", "f*", "*ar"};
const std::vector<std::string> kAccounts = {"a", "b", "bar/a", "foo/b"};
// Both IP families, the catch-alls of each, the IPv4-mapped block and a mapped host, bare
// addresses of each family (host ranges) and ranges with host bits set.
const std::vector<std::string> kIps = {
    "10.0.0.0/30", "10.0.0.1",      "10.0.0.2/31",   "0.0.0.0/0",
    "::/0",        "::ffff:0:0/96", "2001:db8::/32", "::ffff:10.0.0.1",
    "::1",         "fe80::1/10",    "10.0.0.0/8",    "2001:db8::1/128"};
const std::vector<std::string> kRequestPrincipals = {"iss-1/alice",
                                                     "iss-2/*",
                                                     "*/bob",
                                                     "*",
                                                     "iss-*",
                                                     "*lice",
                                                     "https://i.example/team/bob",
                                                     "*/team/bob",
                                                     "https://i.example/*",
                                                     "https://i.example/team/*"};
const std::vector<std::string> kGroups = {"dev", "admin", "d*", "*"};
const std::vector<std::string> kHosts = {"a.foo", "*.FOO", "b.bar:80", "*", "A.*"};
const std::vector<std::string> kMethods = {"GET", "POST", "get", "*", "P*"};
const std::vector<std::string> kPaths = {"/", "/a", "/a/b", "/admin", "/a*", "*b", "*"};
const std::vector<std::string> kPorts = {"80", "8080"};
const std::vector<std::string> kHeaderValues = {"v1", "v2", "v*", "*"};

struct FieldGen {
  const char* name;
  const std::vector<std::string>* pool;
};
const FieldGen kSourceFields[] = {{"principals", &kPrincipals},
                                  {"notPrincipals", &kPrincipals},
                                  {"namespaces", &kNamespaces},
                                  {"notNamespaces", &kNamespaces},
                                  {"serviceAccounts", &kAccounts},
                                  {"ipBlocks", &kIps},
                                  {"notIpBlocks", &kIps},
                                  {"remoteIpBlocks", &kIps},
                                  {"notRemoteIpBlocks", &kIps},
                                  {"requestPrincipals", &kRequestPrincipals},
                                  {"notRequestPrincipals", &kRequestPrincipals}};
const FieldGen kOperationFields[] = {
    {"hosts", &kHosts}, {"notHosts", &kHosts}, {"methods", &kMethods}, {"notMethods", &kMethods},
    {"paths", &kPaths}, {"notPaths", &kPaths}, {"ports", &kPorts},     {"notPorts", &kPorts}};
const FieldGen kWhenKeys[] = {{"source.ip", &kIps},
                              {"remote.ip", &kIps},
                              {"destination.ip", &kIps},
                              {"source.namespace", &kNamespaces},
                              {"source.principal", &kPrincipals},
                              {"destination.port", &kPorts},
                              {"request.headers[x-k]", &kHeaderValues},
                              {"request.auth.principal", &kRequestPrincipals},
                              {"request.auth.claims[groups]", &kGroups}};

template <std::size_t N>
json fields(const FieldGen (&table)[N]) {
  json obj = json::object();
  const auto n = *rc::gen::inRange(1, 3);
  for (int i = 0; i < n; ++i) {
    const auto& f = table[*rc::gen::inRange<std::size_t>(0, N)];
    obj[f.name] = *values_of(*f.pool);
  }
  return obj;
}

json gen_rule() {
  json rule = json::object();
  const auto nfrom = *rc::gen::inRange(0, 3);
  for (int i = 0; i < nfrom; ++i) rule["from"].push_back({{"source", fields(kSourceFields)}});
  const auto nto = *rc::gen::inRange(0, 3);
  for (int i = 0; i < nto; ++i) rule["to"].push_back({{"operation", fields(kOperationFields)}});
  const auto nwhen = *rc::gen::inRange(0, 3);
  for (int i = 0; i < nwhen; ++i) {
    const auto& k = kWhenKeys[*rc::gen::inRange<std::size_t>(0, std::size(kWhenKeys))];
    json c = {{"key", k.name}};
    if (*rc::gen::arbitrary<bool>())
      c["values"] = *values_of(*k.pool);
    else
      c["notValues"] = *values_of(*k.pool);
    rule["when"].push_back(c);
  }
  return rule;
}

json gen_policy(int index) {
  json p = {{"apiVersion", "security.istio.io/v1"},
            {"kind", "AuthorizationPolicy"},
            {"metadata",
             {{"name", *one_of<std::string>({"p", "q", "r"}) + std::to_string(index)},
              {"namespace", *one_of<std::string>({"foo", "foo", "bar", "istio-system"})}}}};
  json spec = json::object();
  spec["action"] = *one_of<std::string>({"ALLOW", "ALLOW", "DENY", "AUDIT"});
  if (*rc::gen::inRange(0, 3) == 0)
    spec["selector"] = {{"matchLabels", {{"app", *one_of<std::string>({"a", "b"})}}}};
  const auto shape = *rc::gen::inRange(0, 6);
  if (shape == 0) {
    // no rules at all
  } else if (shape == 1) {
    spec["rules"] = json::array({json::object()});
  } else {
    const auto n = *rc::gen::inRange(1, 4);
    for (int i = 0; i < n; ++i) spec["rules"].push_back(gen_rule());
  }
  p["spec"] = spec;
  return p;
}

json gen_policies() {
  std::vector<json> policies;
  const auto n = *rc::gen::inRange(0, 7);
  for (int i = 0; i < n; ++i) policies.push_back(gen_policy(i));
  return policies;
}

json gen_workload() {
  return {{"namespace", *one_of<std::string>({"foo", "foo", "bar"})},
          {"labels", {{"app", *one_of<std::string>({"a", "b"})}}}};
}

// Requests come from a plain PRNG rather than rapidcheck: the differential test needs a
// million of them, and rapidcheck's generators cost ~100 us each. Every value is drawn from a
// small pool so that rules really match.
class RequestSource {
 public:
  explicit RequestSource(std::uint64_t seed) : rng_(seed) {}

  json next() {
    json r = {{"protocol", pick({"http", "http", "tcp"})}};
    json src = {{"ip", pick(kAddresses)}};
    if (pick_index(4) != 0) {
      src["principal"] = pick({"cluster.local/ns/foo/sa/a", "cluster.local/ns/foo/sa/b",
                               "cluster.local/ns/bar/sa/a", "other.td/ns/bar/sa/b"});
    }
    if (pick_index(3) == 0) src["remoteIp"] = pick(kAddresses);
    r["source"] = src;
    if (pick_index(3) == 0) r["destinationIp"] = pick(kAddresses);
    r["method"] = pick({"GET", "POST", "PUT"});
    r["path"] = pick({"/", "/a", "/a/b", "/admin", "/a?x=1", "/ab"});
    r["host"] = pick({"a.foo", "A.FOO", "b.bar:80", "x.foo"});
    r["port"] = std::vector<int>{80, 8080, 9000}[pick_index(3)];
    const auto hv = pick_index(3);
    if (hv > 0) r["headers"] = {{"x-k", hv == 1 ? "v1" : "v2"}};
    add_token(r);
    return r;
  }

 private:
  // Every combination of requestPrincipal and jwtClaims, with and without iss/sub, agreeing
  // and (now and then) disagreeing.
  void add_token(json& r) {
    struct Token {
      const char* principal;
      const char* iss;
      const char* sub;
    };
    static const Token kTokens[] = {{"iss-1/alice", "iss-1", "alice"},
                                    {"iss-2/bob", "iss-2", "bob"},
                                    {"iss-1/bob", "iss-1", "bob"},
                                    {"https://i.example/team/bob", "https://i.example", "team/bob"},
                                    {"https://i.example/alice", "https://i.example", "alice"}};
    const auto shape = pick_index(8);
    if (shape == 0) return;  // no token
    const Token& t = kTokens[pick_index(std::size(kTokens))];
    const bool principal = shape != 1;  // shape 1: the payload alone
    const bool claims = shape != 2;     // shape 2: the principal alone
    if (principal) r["requestPrincipal"] = t.principal;
    if (!claims) return;
    json c = json::object();
    const auto parts = pick_index(4);  // 0 none, 1 iss, 2 sub, 3 both
    if (parts & 1U) c["iss"] = t.iss;
    if (parts & 2U) c["sub"] = t.sub;
    if (pick_index(16) == 0) c[pick_index(2) == 0 ? "iss" : "sub"] = "mallory";  // disagrees
    if (pick_index(32) == 0) c["sub"] = 42;                                      // not a string
    switch (pick_index(4)) {
      case 0:
        break;
      case 1:
        c["groups"] = pick({"dev", "admin", "ops"});
        break;
      case 2:
        c["groups"] = json::array({pick({"dev", "admin"}), pick({"ops", "dev"})});
        break;
      default:
        c["groups"] = 7;  // never matches
    }
    r["jwtClaims"] = c;
  }

  static inline const std::vector<const char*> kAddresses = {
      "10.0.0.1", "10.0.0.2",          "10.0.0.3",     "192.168.0.1", "0.0.0.0",
      "::1",      "2001:db8::1",       "2001:db8::ff", "fe80::1",     "::ffff:10.0.0.1",
      "::",       "::ffff:192.168.0.1"};

  std::size_t pick_index(std::size_t n) { return static_cast<std::size_t>(rng_() % n); }
  const char* pick(const std::vector<const char*>& pool) { return pool[pick_index(pool.size())]; }
  const char* pick(std::initializer_list<const char*> pool) {
    return *(pool.begin() + pick_index(pool.size()));
  }

  std::mt19937_64 rng_;
};

struct Compiled {
  tollgate::compile::DecisionTable table;
  tollgate::compile::DecisionTable from_wire;  // as an agent would hold it
};

Compiled compile(const json& policies, const json& workload) {
  std::vector<tollgate::policy::Policy> parsed;
  for (const auto& p : policies) parsed.push_back(tollgate::policy::parse_policy(p));
  auto w = tollgate::policy::parse_workload(workload);
  if (!w.ok()) throw std::runtime_error(w.error().message);
  Compiled c{tollgate::compile::compile_table(parsed, *w, {}), {}};
  auto back =
      tollgate::compile::table_from_json(json::parse(tollgate::compile::to_json(c.table).dump()));
  if (!back.ok()) throw std::runtime_error(back.error().message);
  c.from_wire = std::move(*back);
  return c;
}

// What tollgate says about one request: "error: ..." or "ALLOW|ns/name" ("-" for no policy),
// from the compiled table and from the same table read back from its wire format.
std::pair<std::string, std::string> engine_says(const Compiled& c, const json& request) {
  auto req = tollgate::eval::parse_request(request);
  if (!req.ok()) return {"error: " + req.error().message, "error"};
  auto one = [&req](const tollgate::compile::DecisionTable& t) {
    tollgate::eval::PreparedRequest p;
    tollgate::eval::prepare(*req, t.path_normalization, p);
    const auto d = tollgate::eval::evaluate(t, p);
    return std::string(d.allowed ? "ALLOW|" : "DENY|") + (d.rule ? d.rule->policy : "-");
  };
  return {one(c.table), one(c.from_wire)};
}

std::string reference_says(const json& policies, const json& workload, const json& request) {
  const auto ref = reference_decide(policies, workload, request);
  if (ref.invalid) return "error";
  return std::string(ref.allowed ? "ALLOW|" : "DENY|") + ref.policy.value_or("-");
}

bool agree(const Compiled& c, const json& policies, const json& workload, const json& request) {
  const auto [table, wire] = engine_says(c, request);
  const std::string ref = reference_says(policies, workload, request);
  if (ref == "error") return table.starts_with("error") && wire == "error";
  return table == ref && wire == ref;
}

// Drops from `request` whatever `fails` does not need: each key, each source key, each claim
// and header, until nothing more can go.
json shrink_request(json request, const std::function<bool(const json&)>& fails) {
  bool progress = true;
  while (progress) {
    progress = false;
    for (const char* group : {"", "source", "jwtClaims", "headers"}) {
      if (*group != '\0' && !(request.contains(group) && request[group].is_object())) continue;
      const json& obj = *group == '\0' ? request : request[group];
      std::vector<std::string> keys;
      for (const auto& item : obj.items()) keys.push_back(item.key());
      for (const auto& key : keys) {
        json trial = request;
        (*group == '\0' ? trial : trial[group]).erase(key);
        if (fails(trial)) {
          request = std::move(trial);
          progress = true;
          break;
        }
      }
    }
  }
  return request;
}

// rapidcheck reads RC_PARAMS once, when the first property runs: set it before any does.
const int kRcParams = setenv("RC_PARAMS", "max_success=10000 verbose_progress=0", 0);

std::size_t differential_requests() {
  const char* env = std::getenv("TOLLGATE_DIFFERENTIAL_REQUESTS");
  return env != nullptr ? std::strtoull(env, nullptr, 10) : TOLLGATE_DIFFERENTIAL_REQUESTS;
}

}  // namespace

TEST_CASE("compiled tables decide as the reference interpreter on random policies") {
  const bool ok = rc::check("tollgate == reference", [] {
    const json policies = gen_policies();
    const json workload = gen_workload();
    const json request = RequestSource(*rc::gen::arbitrary<std::uint64_t>()).next();
    const Compiled c = compile(policies, workload);
    RC_LOG() << "policies: " << policies.dump() << "\nworkload: " << workload.dump()
             << "\nrequest: " << request.dump() << "\n";
    const auto [table, wire] = engine_says(c, request);
    const std::string ref = reference_says(policies, workload, request);
    RC_LOG() << "tollgate: " << table << " (from the wire: " << wire << "), reference: " << ref
             << "\n";
    RC_ASSERT(agree(c, policies, workload, request));
    RC_TAG(ref.substr(0, ref.find('|')), request["protocol"].get<std::string>());
  });
  REQUIRE(ok);
}

// The differential run: at least a million requests per CI run (fewer under sanitizers, see
// test/CMakeLists.txt), each decided by the compiled table, by the table read back from its
// wire format, and by the reference interpreter. rapidcheck draws the policy sets and shrinks
// a failing one; the failing request is then shrunk here and printed with it.
TEST_CASE("a million generated requests decide as the reference interpreter, through the wire") {
  // rapidcheck reads RC_PARAMS once per process, so this property runs as many policy sets as
  // the one above (10,000) and spreads the requests over them.
  constexpr std::size_t kPolicySets = 10000;
  const std::size_t per_set = std::max<std::size_t>(1, differential_requests() / kPolicySets);
  std::size_t decided = 0;
  const bool ok = rc::check("tollgate == reference, many requests per policy set", [&] {
    const json policies = gen_policies();
    const json workload = gen_workload();
    const auto seed = *rc::gen::arbitrary<std::uint64_t>();
    const Compiled c = compile(policies, workload);
    RequestSource requests(seed);
    for (std::size_t i = 0; i < per_set; ++i) {
      const json request = requests.next();
      ++decided;
      if (agree(c, policies, workload, request)) continue;
      const json small =
          shrink_request(request, [&](const json& r) { return !agree(c, policies, workload, r); });
      const auto [table, wire] = engine_says(c, small);
      RC_FAIL("policies: " + policies.dump() + "\nworkload: " + workload.dump() +
              "\nrequest: " + small.dump() + "\ntollgate: " + table + " (from the wire: " + wire +
              "), reference: " + reference_says(policies, workload, small));
    }
  });
  std::printf("differential: %zu requests decided over %zu policy sets\n", decided, kPolicySets);
  REQUIRE(ok);
  CHECK(decided >= kPolicySets * per_set);
}

TEST_CASE("the request shrinker keeps only what a failure needs") {
  const json request = json::parse(R"({"protocol":"http","source":{"ip":"::1","principal":"x"},
      "method":"GET","requestPrincipal":"iss-1/alice","jwtClaims":{"iss":"iss-1","groups":"dev"}})");
  const json small = shrink_request(request, [](const json& r) {
    return r.contains("requestPrincipal") && r.contains("source") && r["source"].contains("ip") &&
           r.contains("jwtClaims") && r["jwtClaims"].contains("groups");
  });
  CHECK(small == json::parse(R"({"source":{"ip":"::1"},"requestPrincipal":"iss-1/alice",
                                 "jwtClaims":{"groups":"dev"}})"));
}

TEST_CASE("the reference interpreter itself gets Istio's outcome on the IP and JWT cases") {
  const json cases = json::parse(
      tollgate::testing::read_file(tollgate::testing::source_path("test/conformance/cases.json")));
  int checked = 0;
  for (const auto& c : cases) {
    const std::string id = c["id"].get<std::string>();
    if (!id.starts_with("ip-") && !id.starts_with("jwt-")) continue;
    INFO(id);
    const auto ref =
        reference_decide(c["policies"].get<std::vector<json>>(), c["workload"], c["request"]);
    CHECK_FALSE(ref.invalid.has_value());
    CHECK((ref.allowed ? "ALLOW" : "DENY") == c["expect"].get<std::string>());
    CHECK(json(ref.policy ? json(*ref.policy) : json()) == c["expectPolicy"]);
    ++checked;
  }
  CHECK(checked >= 25);
}

TEST_CASE("the reference interpreter itself: a principal that contradicts its payload is invalid") {
  const json w = {{"namespace", "foo"}};
  auto invalid = [&w](const char* request) {
    return reference_decide({}, w, json::parse(request)).invalid.has_value();
  };
  CHECK(invalid(R"({"requestPrincipal":"a/b","jwtClaims":{"iss":"a","sub":"c"}})"));
  CHECK(invalid(R"({"requestPrincipal":"a/b","jwtClaims":{"iss":"x"}})"));
  CHECK(invalid(R"({"requestPrincipal":"a/b","jwtClaims":{"sub":1}})"));
  CHECK_FALSE(invalid(R"({"requestPrincipal":"a/b/c","jwtClaims":{"iss":"a","sub":"b/c"}})"));
  CHECK_FALSE(invalid(R"({"requestPrincipal":"a/b","jwtClaims":{"groups":["g"]}})"));
}

TEST_CASE("the reference interpreter itself: DENY {} beats a matching ALLOW") {
  const json deny = json::parse(R"({"metadata":{"name":"d","namespace":"foo"},
      "spec":{"action":"DENY","rules":[{}]}})");
  const json allow = json::parse(R"({"metadata":{"name":"a","namespace":"foo"},
      "spec":{"rules":[{}]}})");
  const json w = {{"namespace", "foo"}};
  const auto r = reference_decide({allow, deny}, w, json::parse(R"({"path":"/"})"));
  CHECK_FALSE(r.allowed);
  CHECK(r.policy == "foo/d");
}

TEST_CASE("the reference interpreter itself: an ALLOW policy without rules denies") {
  const json none = json::parse(R"({"metadata":{"name":"n","namespace":"foo"},"spec":{}})");
  const auto r = reference_decide({none}, {{"namespace", "foo"}}, json::parse("{}"));
  CHECK_FALSE(r.allowed);
  CHECK_FALSE(r.policy.has_value());
  const auto other_ns = reference_decide({none}, {{"namespace", "bar"}}, json::parse("{}"));
  CHECK(other_ns.allowed);
}

TEST_CASE("the reference interpreter itself: HTTP-only fields on TCP") {
  const json allow = json::parse(R"({"metadata":{"name":"a","namespace":"foo"},
      "spec":{"rules":[{"to":[{"operation":{"methods":["GET"],"ports":["80"]}}]}]}})");
  const json deny = json::parse(R"({"metadata":{"name":"d","namespace":"foo"},
      "spec":{"action":"DENY","rules":[{"to":[{"operation":{"methods":["GET"]}}]}]}})");
  const json tcp80 = json::parse(R"({"protocol":"tcp","port":80})");
  CHECK_FALSE(reference_decide({allow}, {{"namespace", "foo"}}, tcp80).allowed);
  const auto d = reference_decide({deny}, {{"namespace", "foo"}}, tcp80);
  CHECK_FALSE(d.allowed);
  CHECK(d.policy == "foo/d");
}

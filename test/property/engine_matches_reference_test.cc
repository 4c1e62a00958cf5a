// Property: tollgate's compiled tables decide exactly as the simple reference interpreter
// (test/support/reference_model.cc) on random policies and requests drawn from small pools,
// so that rules really match: same ALLOW/DENY and the same deciding policy.
#include <rapidcheck.h>

#include <catch2/catch.hpp>
#include <cstdlib>

#include "support/fixtures.h"
#include "support/reference_model.h"

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
const std::vector<std::string> kIps = {"10.0.0.0/30", "10.0.0.1", "10.0.0.2/31", "0.0.0.0/0"};
const std::vector<std::string> kRequestPrincipals = {"iss-1/alice", "iss-2/*", "*/bob",
                                                     "*",           "iss-*",   "*lice"};
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
                                  {"requestPrincipals", &kRequestPrincipals},
                                  {"notRequestPrincipals", &kRequestPrincipals}};
const FieldGen kOperationFields[] = {
    {"hosts", &kHosts}, {"notHosts", &kHosts}, {"methods", &kMethods}, {"notMethods", &kMethods},
    {"paths", &kPaths}, {"notPaths", &kPaths}, {"ports", &kPorts},     {"notPorts", &kPorts}};
const FieldGen kWhenKeys[] = {{"source.ip", &kIps},
                              {"source.namespace", &kNamespaces},
                              {"source.principal", &kPrincipals},
                              {"destination.port", &kPorts},
                              {"request.headers[x-k]", &kHeaderValues},
                              {"request.auth.principal", &kRequestPrincipals}};

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

json gen_request() {
  json r = {{"protocol", *one_of<std::string>({"http", "http", "tcp"})}};
  json src = {{"ip", *one_of<std::string>({"10.0.0.1", "10.0.0.2", "10.0.0.3", "192.168.0.1"})}};
  if (*rc::gen::inRange(0, 4) != 0) {
    src["principal"] =
        *one_of<std::string>({"cluster.local/ns/foo/sa/a", "cluster.local/ns/foo/sa/b",
                              "cluster.local/ns/bar/sa/a", "other.td/ns/bar/sa/b"});
  }
  r["source"] = src;
  r["method"] = *one_of<std::string>({"GET", "POST", "PUT"});
  r["path"] = *one_of<std::string>({"/", "/a", "/a/b", "/admin", "/a?x=1", "/ab"});
  r["host"] = *one_of<std::string>({"a.foo", "A.FOO", "b.bar:80", "x.foo"});
  r["port"] = *one_of<int>({80, 8080, 9000});
  const auto hv = *rc::gen::inRange(0, 3);
  if (hv > 0) r["headers"] = {{"x-k", hv == 1 ? "v1" : "v2"}};
  if (*rc::gen::arbitrary<bool>()) {
    r["requestPrincipal"] = *one_of<std::string>({"iss-1/alice", "iss-2/bob", "iss-1/bob"});
  }
  return r;
}

}  // namespace

TEST_CASE("compiled tables decide as the reference interpreter on random policies") {
  setenv("RC_PARAMS", "max_success=10000 verbose_progress=0", 0);
  const bool ok = rc::check("tollgate == reference", [] {
    std::vector<json> policies;
    const auto n = *rc::gen::inRange(0, 7);
    for (int i = 0; i < n; ++i) policies.push_back(gen_policy(i));
    const json workload = {{"namespace", *one_of<std::string>({"foo", "foo", "bar"})},
                           {"labels", {{"app", *one_of<std::string>({"a", "b"})}}}};
    const json request = gen_request();

    std::vector<tollgate::policy::Policy> parsed;
    for (const auto& p : policies) parsed.push_back(tollgate::policy::parse_policy(p));
    auto w = tollgate::policy::parse_workload(workload);
    RC_ASSERT(w.ok());
    const auto table = tollgate::compile::compile_table(parsed, *w, {});
    const auto req = tollgate::testing::mk_request(request.dump());
    const auto d = tollgate::eval::evaluate(table, req);
    const auto ref = reference_decide(policies, workload, request);
    RC_LOG() << "policies: " << json(policies).dump() << "\nworkload: " << workload.dump()
             << "\nrequest: " << request.dump() << "\n";
    RC_ASSERT(d.allowed == ref.allowed);
    const std::optional<std::string> got =
        d.rule != nullptr ? std::optional(d.rule->policy) : std::nullopt;
    RC_ASSERT(got == ref.policy);
    RC_TAG(d.allowed ? "ALLOW" : "DENY", got ? "by a rule" : "by default",
           request["protocol"].get<std::string>());
  });
  REQUIRE(ok);
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

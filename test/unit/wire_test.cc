#include <catch2/catch.hpp>
#include <functional>

#include "support/fixtures.h"

using namespace tollgate;
using nlohmann::json;

namespace {

compile::DecisionTable sample() {
  auto ps = testing::mk_policies(R"(
kind: AuthorizationPolicy
metadata: {name: a, namespace: ns}
spec:
  rules:
  - from: [{source: {principals: [cluster.local/ns/x/sa/y], notIpBlocks: [10.0.0.0/8]}}]
    to: [{operation: {methods: [GET], paths: ["/x/{*}"]}}]
    when:
    - {key: "request.headers[x-k]", values: [v]}
    - {key: "request.auth.claims[a][b]", values: [c]}
    - {key: "experimental.envoy.filters.f[k]", values: ["[v]"]}
---
kind: AuthorizationPolicy
metadata: {name: d, namespace: ns}
spec: {action: DENY, rules: [{}]}
---
kind: AuthorizationPolicy
metadata: {name: c, namespace: ns}
spec: {action: CUSTOM, provider: {name: p}, rules: [{}]}
)");
  return compile::compile_table(ps, testing::mk_workload("ns"), {});
}

}  // namespace

TEST_CASE("a table survives its wire format byte for byte, hash included") {
  const auto t = sample();
  const json wire = compile::to_json(t);
  CHECK(wire["apiVersion"] == compile::kTableApiVersion);
  CHECK(wire["hash"] == t.hash);
  auto back = compile::table_from_json(json::parse(wire.dump()));
  REQUIRE(back.ok());
  CHECK(back->hash == t.hash);
  CHECK(compile::to_json(*back).dump() == wire.dump());
}

namespace {

// One ALLOW policy per predicate kind, a DENY on remote IPs and a CUSTOM stage with a known
// provider, so that each request below is decided by exactly the predicate it names.
compile::DecisionTable every_kind() {
  auto ps = testing::mk_policies(R"(
kind: AuthorizationPolicy
metadata: {name: principal, namespace: ns}
spec: {rules: [{from: [{source: {principals: [cluster.local/ns/x/sa/y]}}]}]}
---
kind: AuthorizationPolicy
metadata: {name: not-ip, namespace: ns}
spec: {rules: [{from: [{source: {notIpBlocks: [10.0.0.0/8, "::/0"]}}]}]}
---
kind: AuthorizationPolicy
metadata: {name: namespace, namespace: ns}
spec: {rules: [{from: [{source: {namespaces: ["z*"]}}]}]}
---
kind: AuthorizationPolicy
metadata: {name: account, namespace: ns}
spec: {rules: [{from: [{source: {serviceAccounts: [w/sa]}}]}]}
---
kind: AuthorizationPolicy
metadata: {name: request-principal, namespace: ns}
spec: {rules: [{from: [{source: {requestPrincipals: ["iss/*"]}}]}]}
---
kind: AuthorizationPolicy
metadata: {name: header, namespace: ns}
spec: {rules: [{when: [{key: "request.headers[x-k]", values: [v]}]}]}
---
kind: AuthorizationPolicy
metadata: {name: claim, namespace: ns}
spec: {rules: [{when: [{key: "request.auth.claims[a][b]", values: [c]}]}]}
---
kind: AuthorizationPolicy
metadata: {name: metadata, namespace: ns}
spec: {rules: [{when: [{key: "experimental.envoy.filters.f[k]", values: ["[v]"]}]}]}
---
kind: AuthorizationPolicy
metadata: {name: template, namespace: ns}
spec: {rules: [{to: [{operation: {paths: ["/x/{*}/y"]}}]}]}
---
kind: AuthorizationPolicy
metadata: {name: host, namespace: ns}
spec: {rules: [{to: [{operation: {hosts: ["*.example"]}}]}]}
---
kind: AuthorizationPolicy
metadata: {name: port, namespace: ns}
spec: {rules: [{to: [{operation: {ports: ["8443"]}}]}]}
---
kind: AuthorizationPolicy
metadata: {name: sni, namespace: ns}
spec: {rules: [{when: [{key: connection.sni, values: [sni.example]}]}]}
---
kind: AuthorizationPolicy
metadata: {name: destination, namespace: ns}
spec: {rules: [{when: [{key: destination.ip, values: ["2001:db8::/32"]}]}]}
---
kind: AuthorizationPolicy
metadata: {name: remote, namespace: ns}
spec: {action: DENY, rules: [{from: [{source: {remoteIpBlocks: [203.0.113.0/24]}}]}]}
---
kind: AuthorizationPolicy
metadata: {name: custom, namespace: ns}
spec: {action: CUSTOM, provider: {name: ext}, rules: [{to: [{operation: {paths: [/custom]}}]}]}
)");
  policy::MeshConfig mesh;
  mesh.extension_providers.push_back({"ext", "http"});
  return compile::compile_table(ps, testing::mk_workload("ns"), mesh);
}

}  // namespace

TEST_CASE("a pulled table decides exactly as the compiled one, on every predicate kind") {
  const auto t = every_kind();
  auto back = compile::table_from_json(json::parse(compile::to_json(t).dump()));
  REQUIRE(back.ok());
  // A plaintext request from 10.1.1.1 matches nothing; each case adds what one policy needs.
  struct Case {
    const char* adds;
    const char* decision;
    const char* policy;
  };
  const Case cases[] = {
      {"", "DENY", ""},
      {R"("source":{"ip":"10.1.1.1","principal":"cluster.local/ns/x/sa/y"})", "ALLOW",
       "ns/principal"},
      {R"("source":{"ip":"192.168.1.1"})", "ALLOW", "ns/not-ip"},
      {R"("source":{"ip":"10.1.1.1","principal":"td/ns/zone/sa/q"})", "ALLOW", "ns/namespace"},
      {R"("source":{"ip":"10.1.1.1","principal":"td/ns/w/sa/sa"})", "ALLOW", "ns/account"},
      {R"("requestPrincipal":"iss/alice")", "ALLOW", "ns/request-principal"},
      {R"("headers":{"X-K":"v"})", "ALLOW", "ns/header"},
      {R"("jwtClaims":{"a":{"b":["c"]}})", "ALLOW", "ns/claim"},
      {R"("dynamicMetadata":{"envoy.filters.f":{"k":["u","v"]}})", "ALLOW", "ns/metadata"},
      {R"("path":"/x/1/y?q")", "ALLOW", "ns/template"},
      {R"("path":"/x/1/2/y")", "DENY", ""},
      {R"("host":"API.example")", "ALLOW", "ns/host"},
      {R"("port":8443)", "ALLOW", "ns/port"},
      {R"("sni":"sni.example")", "ALLOW", "ns/sni"},
      {R"("destinationIp":"2001:db8::9")", "ALLOW", "ns/destination"},
      {R"("destinationIp":"::ffff:10.0.0.1")", "DENY", ""},
      {R"("source":{"ip":"10.1.1.1","remoteIp":"203.0.113.7"},"port":8443)", "DENY", "ns/remote"},
      {R"("path":"/custom","extAuthzDecision":"DENY")", "DENY", "ns/custom"},
      {R"("path":"/custom","extAuthzDecision":"ALLOW")", "DENY", ""},
  };
  for (const auto& c : cases) {
    std::string body = c.adds;
    if (body.find("\"source\"") == std::string::npos) {
      body = R"("source":{"ip":"10.1.1.1"})" + std::string(body.empty() ? "" : ",") + body;
    }
    const auto req = testing::mk_request("{" + body + "}");
    INFO(body);
    for (const compile::DecisionTable* table :
         {&t, static_cast<const compile::DecisionTable*>(&*back)}) {
      const auto d = eval::evaluate(*table, req);
      CHECK((d.allowed ? "ALLOW" : "DENY") == std::string(c.decision));
      CHECK((d.rule != nullptr ? d.rule->policy : "") == std::string(c.policy));
    }
  }
}

namespace {

// Calls `f` with `root` in which one node (`node` or below) has been replaced by `wrong`, for
// every node in turn; `root` is restored afterwards.
template <typename F>
void each_replacement(const json& wrong, F f, json& root, json* node) {
  const json saved = *node;
  *node = wrong;
  f(root);
  *node = saved;
  if (node->is_object()) {
    for (auto& [k, v] : node->items()) each_replacement(wrong, f, root, &v);
  } else if (node->is_array()) {
    for (auto& v : *node) each_replacement(wrong, f, root, &v);
  }
}

}  // namespace

TEST_CASE("a table with any field of the wrong type is refused with its path, never thrown") {
  const json wire = compile::to_json(every_kind());
  const json wrongs[] = {json(),        json(7),        json(-1),
                         json(1.5),     json("x"),      json(true),
                         json::array(), json::object(), json::array({json::object()})};
  std::size_t tried = 0, refused = 0;
  for (const auto& wrong : wrongs) {
    json root = wire;
    each_replacement(
        wrong,
        [&](const json& candidate) {
          ++tried;
          util::Result<compile::DecisionTable> r = util::make_error("not run");
          REQUIRE_NOTHROW(r = compile::table_from_json(candidate));
          if (r.ok()) return;
          ++refused;
          CHECK_THAT(r.error().message, Catch::StartsWith("table:"));
        },
        root, &root);
  }
  // Most replacements change the content, so the hash (or the types) refuses them.
  CHECK(tried > 1000);
  CHECK(refused > tried * 9 / 10);
}

TEST_CASE("wrong types in a table name the field") {
  json wire = compile::to_json(every_kind());
  wire.erase("hash");
  auto message = [&wire](const std::function<void(json&)>& edit) {
    json j = wire;
    edit(j);
    auto r = compile::table_from_json(j);
    return r.ok() ? std::string("ok") : r.error().message;
  };
  CHECK(message([](json& j) { j["allow"][0]["rule"] = "0"; }) ==
        "table: allow[0].rule: must be a non-negative integer");
  CHECK(message([](json& j) { j["namespace"] = 3; }) == "table: namespace: must be a string");
  CHECK(message([](json& j) { j["hasAllow"] = "yes"; }) ==
        "table: hasAllow: must be true or false");
  CHECK(message([](json& j) { j["allow"][0]["principals"][0][0]["not"] = 1; }) ==
        "table: allow[0].principals[0][0].not: must be true or false");
  CHECK(message([](json& j) { j["allow"][0]["principals"][0][0]["values"] = {1}; }) ==
        "table: allow[0].principals[0][0].values: must be a list of strings");
  CHECK(message([](json& j) { j["dryRun"] = json::array(); }) ==
        "table: dryRun: must be an object");
  CHECK(message([](json& j) { j["custom"][0]["rules"] = "none"; }) ==
        "table: custom[0].rules: must be a list");
  CHECK(message([](json& j) { j["deny"][0]["action"] = "MAYBE"; }) ==
        "table: deny[0].action: unknown action \"MAYBE\"");
  CHECK(message([](json&) {}) == "ok");
}

TEST_CASE("edited, corrupted or foreign tables are rejected with a reason") {
  json wire = compile::to_json(sample());
  json edited = wire;
  edited["deny"] = json::array();
  auto r1 = compile::table_from_json(edited);
  REQUIRE_FALSE(r1.ok());
  CHECK_THAT(r1.error().message, Catch::Contains("hash"));
  json foreign = wire;
  foreign["apiVersion"] = "v0";
  CHECK_FALSE(compile::table_from_json(foreign).ok());
  json broken = wire;
  broken["allow"][0]["principals"][0][0]["attr"] = "nope";
  auto r3 = compile::table_from_json(broken);
  REQUIRE_FALSE(r3.ok());
  CHECK_THAT(r3.error().message, Catch::Contains("allow[0].principals[0][0].attr"));
  CHECK_FALSE(compile::table_from_json(json::array()).ok());
}

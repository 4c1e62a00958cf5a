#include <catch2/catch.hpp>

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

TEST_CASE("a pulled table decides exactly as the compiled one") {
  const auto t = sample();
  auto back = compile::table_from_json(compile::to_json(t));
  REQUIRE(back.ok());
  const auto req = testing::mk_request(
      R"({"source":{"principal":"cluster.local/ns/x/sa/y","ip":"192.168.0.1"},"method":"GET",
          "path":"/x/1","headers":{"x-k":"v"},"jwtClaims":{"a":{"b":"c"}},
          "dynamicMetadata":{"envoy.filters.f":{"k":["v"]}},"extAuthzDecision":"ALLOW"})");
  const auto d1 = eval::evaluate(t, req);
  const auto d2 = eval::evaluate(*back, req);
  CHECK(d1.allowed == d2.allowed);
  REQUIRE(d1.rule != nullptr);
  REQUIRE(d2.rule != nullptr);
  CHECK(d1.rule->name == d2.rule->name);
  // Provider "p" is not in the mesh: the CUSTOM rule became a DENY rule and decides first.
  CHECK_FALSE(d2.allowed);
  CHECK(d2.rule->policy == "ns/c");
  CHECK_THAT(d2.rule->name, Catch::EndsWith("-deny-due-to-bad-CUSTOM-action"));
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

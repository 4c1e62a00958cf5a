#include <catch2/catch.hpp>

#include "support/fixtures.h"

using namespace tollgate;
using tollgate::testing::mk_policies;
using tollgate::testing::mk_workload;

TEST_CASE("scope: own namespace and root namespace apply, other namespaces never do") {
  const auto ps = mk_policies(R"(
kind: AuthorizationPolicy
metadata: {name: own, namespace: foo}
---
kind: AuthorizationPolicy
metadata: {name: root, namespace: istio-system}
spec: {selector: {matchLabels: {app: a}}}
---
kind: AuthorizationPolicy
metadata: {name: other, namespace: bar}
---
kind: AuthorizationPolicy
metadata: {name: sel, namespace: foo}
spec: {selector: {matchLabels: {app: a, version: v1}}}
---
kind: AuthorizationPolicy
metadata: {name: ref, namespace: foo}
spec: {targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]}
)");
  policy::MeshConfig mesh;
  const auto t = compile::compile_table(ps, mk_workload("foo", {{"app", "a"}}), mesh);
  CHECK(t.policies == std::vector<std::string>{"foo/own", "istio-system/root"});
  const auto t2 =
      compile::compile_table(ps, mk_workload("foo", {{"app", "a"}, {"version", "v1"}}), mesh);
  CHECK(t2.policies == std::vector<std::string>{"foo/own", "foo/sel", "istio-system/root"});
  // A Gateway API gateway attaches by targetRef.
  const auto gw = compile::compile_table(
      ps, mk_workload("foo", {{"gateway.networking.k8s.io/gateway-name", "gw"}}), mesh);
  CHECK(gw.policies == std::vector<std::string>{"foo/own", "foo/ref"});
  mesh.root_namespace = "istio-config";
  const auto t3 = compile::compile_table(ps, mk_workload("bar", {{"app", "a"}}), mesh);
  CHECK(t3.policies == std::vector<std::string>{"bar/other"});
}

TEST_CASE("rules are named as Envoy names them and kept in byte order of the name") {
  std::string yaml =
      "kind: AuthorizationPolicy\nmetadata: {name: p, namespace: ns}\nspec:\n  rules:\n";
  for (int i = 0; i < 12; ++i)
    yaml += "  - to: [{operation: {ports: [\"" + std::to_string(i + 1) + "\"]}}]\n";
  const auto t = compile::compile_table(mk_policies(yaml), mk_workload("ns"), {});
  REQUIRE(t.allow.size() == 12);
  CHECK(t.allow[0].name == "ns[ns]-policy[p]-rule[0]");
  CHECK(t.allow[1].name == "ns[ns]-policy[p]-rule[10]");  // '0' sorts before ']'
  CHECK(t.allow[2].name == "ns[ns]-policy[p]-rule[11]");
  CHECK(t.allow[3].name == "ns[ns]-policy[p]-rule[1]");
  CHECK(t.has_allow);
}

TEST_CASE("an ALLOW rule with a value Istio cannot generate is dropped; DENY ignores the value") {
  const auto ps = mk_policies(R"(
kind: AuthorizationPolicy
metadata: {name: a, namespace: ns}
spec:
  rules:
  - to: [{operation: {ports: ["80", "abc"]}}]
  - to: [{operation: {ports: ["81"]}}]
---
kind: AuthorizationPolicy
metadata: {name: d, namespace: ns}
spec:
  action: DENY
  rules:
  - to: [{operation: {ports: ["abc"], methods: [GET]}}]
)");
  const auto t = compile::compile_table(ps, mk_workload("ns"), {});
  REQUIRE(t.allow.size() == 1);
  CHECK(t.allow[0].rule == 1);
  REQUIRE(t.deny.size() == 1);
  REQUIRE(t.deny[0].permissions.size() == 1);
  REQUIRE(t.deny[0].permissions[0].all.size() == 1);  // the bad ports field vanished
  CHECK(t.deny[0].permissions[0].all[0].attr == policy::Attr::kMethod);
  CHECK(t.notes.size() == 2);
}

TEST_CASE("trust-domain migration expands cluster.local and aliases, keeps other domains") {
  const auto ps = mk_policies(R"(
kind: AuthorizationPolicy
metadata: {name: a, namespace: ns}
spec:
  rules:
  - from: [{source: {principals: [cluster.local/ns/x/sa/y, other.td/ns/x/sa/y, "*/ns/x/sa/y"]}}]
)");
  policy::MeshConfig mesh;
  mesh.trust_domain = "new-td";
  mesh.trust_domain_aliases = {"old-td"};
  const auto t = compile::compile_table(ps, mk_workload("ns"), mesh);
  REQUIRE(t.allow.size() == 1);
  const auto& values = t.allow[0].principals.at(0).all.at(0).values;
  CHECK(values == std::vector<std::string>{"new-td/ns/x/sa/y", "old-td/ns/x/sa/y",
                                           "other.td/ns/x/sa/y", "*/ns/x/sa/y"});
}

TEST_CASE("when conditions are split between principals and permissions as Istio does") {
  const auto ps = mk_policies(R"(
kind: AuthorizationPolicy
metadata: {name: a, namespace: ns}
spec:
  rules:
  - from: [{source: {namespaces: [x]}}, {source: {namespaces: [y]}}]
    when:
    - {key: source.ip, values: [10.0.0.1]}
    - {key: destination.port, values: ["80"]}
)");
  const auto t = compile::compile_table(ps, mk_workload("ns"), {});
  REQUIRE(t.allow.size() == 1);
  const auto& r = t.allow[0];
  REQUIRE(r.principals.size() == 2);
  CHECK(r.principals[0].all.size() == 2);  // namespace + source.ip
  CHECK(r.principals[1].all.size() == 2);
  REQUIRE(r.permissions.size() == 1);
  CHECK(r.permissions[0].all.size() == 1);  // destination.port
}

TEST_CASE("CUSTOM with an unknown provider, or two providers without the flag, denies on match") {
  const auto ps = mk_policies(R"(
kind: AuthorizationPolicy
metadata: {name: c1, namespace: ns}
spec: {action: CUSTOM, provider: {name: p1}, rules: [{to: [{operation: {paths: [/a]}}]}]}
---
kind: AuthorizationPolicy
metadata: {name: c2, namespace: ns}
spec: {action: CUSTOM, provider: {name: p2}, rules: [{to: [{operation: {paths: [/b]}}]}]}
)");
  policy::MeshConfig mesh;
  mesh.extension_providers = {{"p1", "grpc"}, {"p2", "http"}};
  auto t = compile::compile_table(ps, mk_workload("ns"), mesh);
  REQUIRE(t.custom.size() == 1);
  CHECK(t.custom[0].deny_on_match);
  CHECK(t.custom[0].rules[0].name == "ns[ns]-policy[c1]-rule[0]-deny-due-to-bad-CUSTOM-action");
  mesh.enable_multiple_custom_providers = true;
  t = compile::compile_table(ps, mk_workload("ns"), mesh);
  REQUIRE(t.custom.size() == 2);
  CHECK_FALSE(t.custom[0].deny_on_match);
  CHECK(t.custom[0].provider == "p1");
  CHECK(t.custom[1].type == "http");
}

TEST_CASE("dry-run policies are shadows: they neither decide nor count as ALLOW policies") {
  const auto ps = mk_policies(R"(
kind: AuthorizationPolicy
metadata: {name: a, namespace: ns, annotations: {istio.io/dry-run: "true"}}
spec: {rules: [{}]}
)");
  const auto t = compile::compile_table(ps, mk_workload("ns"), {});
  CHECK_FALSE(t.has_allow);
  CHECK(t.allow.empty());
  CHECK(t.dry_run_allow.size() == 1);
  CHECK(t.has_dry_run_allow);
}

TEST_CASE("identical inputs give identical tables and hashes; a change changes the hash") {
  const std::string yaml = R"(
kind: AuthorizationPolicy
metadata: {name: a, namespace: ns}
spec: {rules: [{from: [{source: {principals: [b, a]}}]}]}
)";
  const auto t1 = compile::compile_table(mk_policies(yaml), mk_workload("ns"), {});
  const auto t2 = compile::compile_table(mk_policies(yaml), mk_workload("ns"), {});
  CHECK(t1.hash.size() == 32);
  CHECK(t1.hash == t2.hash);
  CHECK(compile::to_json(t1).dump() == compile::to_json(t2).dump());
  auto changed = yaml;
  changed.replace(changed.find("[b, a]"), 6, "[b, c]");
  const auto t3 = compile::compile_table(mk_policies(changed), mk_workload("ns"), {});
  CHECK(t3.hash != t1.hash);
}

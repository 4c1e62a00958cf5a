// The status conditions tollgate writes on policies (src/status/conditions.cc).
#include "tollgate/status/conditions.h"

#include <catch2/catch.hpp>

#include "support/fixtures.h"
#include "tollgate/lint/lint.h"

using namespace tollgate;
using nlohmann::json;

namespace {

const status::Condition* find(const std::vector<status::Condition>& cs, std::string_view type) {
  for (const auto& c : cs) {
    if (c.type == type) return &c;
  }
  return nullptr;
}

}  // namespace

TEST_CASE("the seed article's ALLOW policy is accepted but not effective: ShadowedByDeny") {
  const auto policies = testing::mk_policies(R"(
kind: AuthorizationPolicy
metadata: {name: deny-all-backend, namespace: default}
spec: {selector: {matchLabels: {app: backend}}, action: DENY, rules: [{}]}
---
kind: AuthorizationPolicy
metadata: {name: allow-frontend, namespace: default}
spec:
  selector: {matchLabels: {app: backend}}
  rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/frontend]}}]}]
)");
  std::vector<const policy::Policy*> ptrs;
  for (const auto& p : policies) ptrs.push_back(&p);
  const std::vector<policy::Workload> workloads = {
      testing::mk_workload("default", {{"app", "backend"}}, "backend")};
  lint::Context ctx;
  ctx.policies = ptrs;
  ctx.workloads = workloads;
  const auto lint = lint::lint_policy(policies[1], ctx);
  const auto cs = status::desired_conditions(policies[1], lint);
  REQUIRE(find(cs, status::kAccepted) != nullptr);
  CHECK(find(cs, status::kAccepted)->status == "True");
  const auto* effective = find(cs, status::kEffective);
  REQUIRE(effective != nullptr);
  CHECK(effective->status == "False");
  CHECK(effective->reason == "ShadowedByDeny");
  CHECK_THAT(effective->message, Catch::Contains("default/deny-all-backend"));
  const auto deny = status::desired_conditions(policies[0], lint::lint_policy(policies[0], ctx));
  CHECK(find(deny, status::kEffective)->status == "True");
}

TEST_CASE("a policy with errors is not accepted, and says its first errors") {
  const auto p = testing::mk_policy(R"(
kind: AuthorizationPolicy
metadata: {name: bad, namespace: default}
spec: {rules: [{to: [{operation: {methods: [GET], ports: ["x", "99999"]}}]}]}
)");
  REQUIRE(p.has_errors());
  const auto cs = status::desired_conditions(p, {});
  const auto* accepted = find(cs, status::kAccepted);
  REQUIRE(accepted != nullptr);
  CHECK(accepted->status == "False");
  CHECK(accepted->reason == "Invalid");
  CHECK_THAT(accepted->message, Catch::StartsWith("compiled to fail closed ("));
  CHECK_THAT(accepted->message, Catch::Contains("ports"));
  CHECK(accepted->message.size() <= status::kMaxMessage);
}

TEST_CASE("merging keeps others' conditions and our transition times unless status flips") {
  const json istio = {{"type", "Reconciled"}, {"status", "True"}, {"reason", "x"}};
  const std::vector<status::Condition> ok = {
      {"tollgate.dev/Accepted", "True", "Compiled", "compiled without errors"}};
  auto first = status::merge_conditions(json::array({istio}), ok, 3, "2026-12-02T10:00:00Z");
  REQUIRE(first.has_value());
  REQUIRE(first->size() == 2);
  CHECK((*first)[0] == istio);
  CHECK((*first)[1]["observedGeneration"] == 3);
  CHECK((*first)[1]["lastTransitionTime"] == "2026-12-02T10:00:00Z");
  // The same again, later: nothing to write.
  CHECK_FALSE(status::merge_conditions(*first, ok, 3, "2026-12-02T11:00:00Z").has_value());
  // A new generation with the same status: written, transition time kept.
  auto gen = status::merge_conditions(*first, ok, 4, "2026-12-02T12:00:00Z");
  REQUIRE(gen.has_value());
  CHECK((*gen)[1]["observedGeneration"] == 4);
  CHECK((*gen)[1]["lastTransitionTime"] == "2026-12-02T10:00:00Z");
  // The status flips: a new transition time.
  const std::vector<status::Condition> bad = {
      {"tollgate.dev/Accepted", "False", "Invalid", "compiled to fail closed"}};
  auto flip = status::merge_conditions(*gen, bad, 5, "2026-12-02T13:00:00Z");
  REQUIRE(flip.has_value());
  CHECK((*flip)[1]["lastTransitionTime"] == "2026-12-02T13:00:00Z");
  // Our types no longer wanted are removed; null or garbage current lists are empty.
  auto none = status::merge_conditions(*flip, {}, 5, "2026-12-02T13:00:00Z");
  REQUIRE(none.has_value());
  CHECK(*none == json::array({istio}));
  CHECK(status::merge_conditions(nullptr, ok, 1, "t")->size() == 1);
  CHECK(status::merge_conditions("garbage", ok, 1, "t")->size() == 1);
  // A condition of ours with wrong-typed fields is rewritten, never a throw.
  const json odd = json::array({{{"type", "tollgate.dev/Accepted"}, {"status", 7}}});
  auto fixed = status::merge_conditions(odd, ok, 1, "t");
  REQUIRE(fixed.has_value());
  CHECK((*fixed)[0]["status"] == "True");
}

TEST_CASE("the status patch carries the whole list and the resourceVersion read") {
  const json list = json::array({{{"type", "tollgate.dev/Accepted"}}});
  const json patch = status::status_patch(list, "42");
  CHECK(patch["metadata"]["resourceVersion"] == "42");
  CHECK(patch["status"]["conditions"] == list);
  CHECK_FALSE(patch["status"].contains("validationMessages"));
  CHECK_FALSE(patch["status"].contains("observedGeneration"));
}

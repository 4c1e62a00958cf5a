// What the status writer wants to write, and when it wants nothing (src/status/reconciler.cc),
// and TG101 judged on selectors alone (lint::shadowed_by_deny).
#include "tollgate/status/reconciler.h"

#include <catch2/catch.hpp>

#include "support/fixtures.h"
#include "tollgate/lint/lint.h"

using namespace tollgate;
using nlohmann::json;

namespace {

const char* kNow = "2026-12-03T08:00:00Z";

json object_of(const std::string& name, const json& spec, std::int64_t generation = 1,
               const std::string& rv = "10", const json& conditions = nullptr,
               const std::string& ns = "default") {
  json o = {{"apiVersion", "security.istio.io/v1"},
            {"kind", "AuthorizationPolicy"},
            {"metadata",
             {{"name", name},
              {"namespace", ns},
              {"uid", "uid-" + name},
              {"resourceVersion", rv},
              {"generation", generation}}},
            {"spec", spec}};
  if (!conditions.is_null()) o["status"] = {{"conditions", conditions}};
  return o;
}

index::Event upsert(const json& object) {
  index::Event e;
  e.kind = index::Kind::kPolicy;
  e.type = index::Event::Type::kUpsert;
  e.objects.emplace_back(index::policy_object(object));
  return e;
}

index::Event replace(const std::vector<json>& objects) {
  index::Event e;
  e.kind = index::Kind::kPolicy;
  e.type = index::Event::Type::kReplace;
  for (const auto& o : objects) e.objects.emplace_back(index::policy_object(o));
  return e;
}

const json kAllow = {
    {"selector", {{"matchLabels", {{"app", "backend"}}}}},
    {"rules",
     json::array(
         {{{"from", json::array({{{"source", {{"namespaces", json::array({"fe"})}}}}})}}})}};
const json kDenyAll = {{"selector", {{"matchLabels", {{"app", "backend"}}}}},
                       {"action", "DENY"},
                       {"rules", json::array({json::object()})}};

// The object as the API server answers a /status patch: the patch's conditions applied.
json written(json object, const status::Plan& plan, const std::string& rv) {
  object["status"]["conditions"] = json::parse(plan.patch)["status"]["conditions"];
  object["metadata"]["resourceVersion"] = rv;
  return object;
}

}  // namespace

TEST_CASE("a new valid policy wants one write; once written, nothing more") {
  status::Reconciler r({});
  const json p = object_of("allow", kAllow);
  r.apply(upsert(p));
  REQUIRE(r.take_marked() == std::vector<std::string>{"default/allow"});
  auto plan = r.plan("default/allow", kNow);
  REQUIRE(plan);
  CHECK(plan->path ==
        "/apis/security.istio.io/v1/namespaces/default/authorizationpolicies/allow/status");
  CHECK(json::parse(plan->patch)["metadata"]["resourceVersion"] == "10");
  const json conds = json::parse(plan->patch)["status"]["conditions"];
  REQUIRE(conds.size() == 2);
  CHECK(conds[0]["type"] == "tollgate.dev/Accepted");
  CHECK(conds[0]["status"] == "True");
  CHECK(conds[0]["observedGeneration"] == 1);
  CHECK(conds[1]["type"] == "tollgate.dev/Effective");
  CHECK(conds[1]["status"] == "True");
  CHECK(plan->before.empty());

  r.observed("default/allow", written(p, *plan, "11"));
  CHECK_FALSE(r.plan("default/allow", "2026-12-03T09:00:00Z"));
  // The watch event of that write, and an older one still in flight: nothing to do.
  r.apply(upsert(written(p, *plan, "11")));
  r.apply(upsert(p));
  CHECK_FALSE(r.plan("default/allow", kNow));
}

TEST_CASE("label edits, others' status edits and relists want no write; a spec edit does") {
  status::Reconciler r({});
  json p = object_of("allow", kAllow);
  r.apply(upsert(p));
  auto plan = r.plan("default/allow", kNow);
  REQUIRE(plan);
  json current = written(p, *plan, "11");
  r.observed("default/allow", current);
  r.take_marked();

  json labelled = current;
  labelled["metadata"]["labels"] = {{"team", "a"}};
  labelled["metadata"]["resourceVersion"] = "12";
  r.apply(upsert(labelled));
  CHECK_FALSE(r.plan("default/allow", "2026-12-03T09:00:00Z"));

  // istiod writes its own condition and validationMessages: ours are still as wanted.
  json istiod = labelled;
  istiod["status"]["conditions"].push_back(
      {{"type", "ztunnel.istio.io/Accepted"}, {"status", "True"}, {"reason", "Accepted"}});
  istiod["status"]["validationMessages"] = json::array({{{"type", {{"code", "IST0102"}}}}});
  istiod["metadata"]["resourceVersion"] = "13";
  r.apply(upsert(istiod));
  CHECK_FALSE(r.plan("default/allow", "2026-12-03T09:00:00Z"));

  r.apply(replace({istiod}));
  CHECK_FALSE(r.plan("default/allow", "2026-12-03T09:00:00Z"));

  // A spec edit bumps the generation: one write, keeping istiod's entry and our times.
  json edited = istiod;
  edited["spec"]["rules"][0]["from"][0]["source"]["namespaces"] = json::array({"fe", "be"});
  edited["metadata"]["generation"] = 2;
  edited["metadata"]["resourceVersion"] = "14";
  r.apply(upsert(edited));
  auto again = r.plan("default/allow", "2026-12-03T09:00:00Z");
  REQUIRE(again);
  const json conds = json::parse(again->patch)["status"]["conditions"];
  REQUIRE(conds.size() == 3);
  CHECK(conds[0] == istiod["status"]["conditions"][2]);
  CHECK(conds[1]["observedGeneration"] == 2);
  CHECK(conds[1]["lastTransitionTime"] == kNow);
  CHECK_FALSE(json::parse(again->patch)["status"].contains("validationMessages"));
  CHECK(json::parse(again->patch)["metadata"]["resourceVersion"] == "14");
}

TEST_CASE("a deny-all DENY policy makes the ALLOW policy it shadows not effective, and back") {
  status::Reconciler r({});
  json allow = object_of("allow", kAllow);
  r.apply(upsert(allow));
  auto plan = r.plan("default/allow", kNow);
  REQUIRE(plan);
  allow = written(allow, *plan, "11");
  r.observed("default/allow", allow);
  r.take_marked();

  r.apply(upsert(object_of("deny-all", kDenyAll, 1, "12")));
  const auto marked = r.take_marked();
  CHECK(marked == std::vector<std::string>{"default/allow", "default/deny-all"});
  auto shadowed = r.plan("default/allow", "2026-12-03T09:00:00Z");
  REQUIRE(shadowed);
  const json c = json::parse(shadowed->patch)["status"]["conditions"][1];
  CHECK(c["type"] == "tollgate.dev/Effective");
  CHECK(c["status"] == "False");
  CHECK(c["reason"] == "ShadowedByDeny");
  CHECK(c["lastTransitionTime"] == "2026-12-03T09:00:00Z");
  CHECK(c["message"].get<std::string>().find("default/deny-all") != std::string::npos);
  REQUIRE(shadowed->before.size() == 2);
  CHECK(shadowed->before[1].status == "True");

  // The DENY policy goes away: the ALLOW policy is effective again.
  allow = written(allow, *shadowed, "13");
  r.observed("default/allow", allow);
  index::Event del;
  del.kind = index::Kind::kPolicy;
  del.type = index::Event::Type::kDelete;
  del.objects.emplace_back(index::policy_object(object_of("deny-all", kDenyAll, 1, "14")));
  r.apply(del);
  auto back = r.plan("default/allow", "2026-12-03T10:00:00Z");
  REQUIRE(back);
  CHECK(json::parse(back->patch)["status"]["conditions"][1]["status"] == "True");
}

TEST_CASE("an invalid policy is not accepted; a replace forgets policies it does not list") {
  status::Reconciler r({});
  r.apply(upsert(object_of("bad", {{"action", "MAYBE"}})));
  auto plan = r.plan("default/bad", kNow);
  REQUIRE(plan);
  const json c = json::parse(plan->patch)["status"]["conditions"][0];
  CHECK(c["status"] == "False");
  CHECK(c["reason"] == "Invalid");
  CHECK(c["message"].get<std::string>().find("spec.action") != std::string::npos);

  r.apply(replace({object_of("other", kAllow)}));
  CHECK_FALSE(r.known("default/bad"));
  CHECK_FALSE(r.plan("default/bad", kNow));
  CHECK(r.plan("default/other", kNow));
  r.forget("default/other");
  CHECK(r.size() == 0);
}

TEST_CASE("a recreated policy (another uid) is planned from its new object") {
  status::Reconciler r({});
  json p = object_of("allow", kAllow, 1, "20");
  r.apply(upsert(p));
  auto plan = r.plan("default/allow", kNow);
  REQUIRE(plan);
  r.observed("default/allow", written(p, *plan, "21"));
  json recreated = object_of("allow", kAllow, 1, "5");  // an older-looking rv, another uid
  recreated["metadata"]["uid"] = "uid-allow-2";
  r.apply(upsert(recreated));
  auto again = r.plan("default/allow", kNow);
  REQUIRE(again);
  CHECK(again->uid == "uid-allow-2");
  CHECK(json::parse(again->patch)["metadata"]["resourceVersion"] == "5");
}

TEST_CASE("shadowed_by_deny judges selectors, not pods") {
  const auto policies = testing::mk_policies(R"(
kind: AuthorizationPolicy
metadata: {name: deny-backend, namespace: default}
spec: {selector: {matchLabels: {app: backend}}, action: DENY, rules: [{}]}
---
kind: AuthorizationPolicy
metadata: {name: allow-backend-v2, namespace: default}
spec: {selector: {matchLabels: {app: backend, version: v2}}, rules: [{}]}
---
kind: AuthorizationPolicy
metadata: {name: allow-ns, namespace: default}
spec: {rules: [{}]}
---
kind: AuthorizationPolicy
metadata: {name: allow-other-ns, namespace: other}
spec: {selector: {matchLabels: {app: backend}}, rules: [{}]}
---
kind: AuthorizationPolicy
metadata: {name: deny-dry, namespace: other, annotations: {istio.io/dry-run: "true"}}
spec: {action: DENY, rules: [{}]}
---
kind: AuthorizationPolicy
metadata: {name: deny-some, namespace: other}
spec: {action: DENY, rules: [{to: [{operation: {paths: [/admin]}}]}]}
)");
  std::vector<const policy::Policy*> ptrs;
  for (const auto& p : policies) ptrs.push_back(&p);
  const policy::MeshConfig mesh;
  auto shadowed = [&](std::size_t i) { return lint::shadowed_by_deny(policies[i], ptrs, mesh); };
  const auto v2 = shadowed(1);
  REQUIRE(v2);
  CHECK(v2->code == "TG101");
  CHECK(v2->message.find("default/deny-backend spec.rules[0]") != std::string::npos);
  CHECK_FALSE(shadowed(2));  // the namespace has workloads without app=backend
  CHECK_FALSE(shadowed(3));  // a dry-run and a conditional DENY shadow nothing
  CHECK_FALSE(shadowed(0));  // a DENY policy is never "shadowed"

  // A root-namespace deny-all without a selector shadows every ALLOW policy.
  const auto root = testing::mk_policies(R"(
kind: AuthorizationPolicy
metadata: {name: deny-everything, namespace: istio-system}
spec: {action: DENY, rules: [{}]}
)");
  ptrs.push_back(&root[0]);
  CHECK(shadowed(2));
  CHECK(shadowed(3));
}

TEST_CASE("after a 404, the object's stale watch events are ignored until its deletion") {
  status::Reconciler r({});
  const json p = object_of("doomed", kAllow, 1, "30");
  r.apply(upsert(p));
  r.gone("default/doomed");
  CHECK_FALSE(r.known("default/doomed"));
  json stale = p;
  stale["metadata"]["labels"] = {{"touched", "yes"}};
  stale["metadata"]["resourceVersion"] = "31";
  r.apply(upsert(stale));  // read before it went: nothing to write
  CHECK_FALSE(r.plan("default/doomed", kNow));
  index::Event del;
  del.kind = index::Kind::kPolicy;
  del.type = index::Event::Type::kDelete;
  del.objects.emplace_back(index::policy_object(stale));
  r.apply(del);
  // Created again (another uid): planned as a new object.
  json recreated = object_of("doomed", kAllow, 1, "40");
  recreated["metadata"]["uid"] = "uid-doomed-2";
  r.apply(upsert(recreated));
  CHECK(r.plan("default/doomed", kNow));
  r.gone("default/doomed");
  recreated["metadata"]["uid"] = "uid-doomed-3";  // and again, its deletion not seen yet
  r.apply(upsert(recreated));
  CHECK(r.plan("default/doomed", kNow));
}

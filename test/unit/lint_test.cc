#include "tollgate/compile/lint.h"

#include <catch2/catch.hpp>

#include "support/fixtures.h"
#include "tollgate/source/manifests.h"

using namespace tollgate;

namespace {

struct Linted {
  source::ClusterState state;
  std::vector<policy::Finding> findings;
  std::vector<const policy::Finding*> with(const std::string& code) const {
    std::vector<const policy::Finding*> out;
    for (const auto& f : findings) {
      if (f.code == code) out.push_back(&f);
    }
    return out;
  }
};

Linted run(const std::string& yaml) {
  Linted l;
  auto docs = policy::parse_documents(yaml, "t.yaml");
  REQUIRE(docs.ok());
  for (const auto& d : *docs) source::add_object(l.state, d.object, d.origin);
  compile::LintInput in;
  in.policies = l.state.policies;
  in.workloads = l.state.workloads;
  in.service_accounts = &l.state.service_accounts;
  in.namespaces = &l.state.namespaces;
  l.findings = compile::lint(in);
  return l;
}

const char* kBackend = R"(
apiVersion: apps/v1
kind: Deployment
metadata: {name: backend, namespace: default}
spec:
  template:
    metadata: {labels: {app: backend}}
    spec: {serviceAccountName: backend}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: frontend, namespace: default}
)";

}  // namespace

TEST_CASE("lint says plainly that a deny-all DENY makes the seed's ALLOW policy useless") {
  const auto l = run(std::string(kBackend) + R"(
---
kind: AuthorizationPolicy
metadata: {name: deny-all-backend, namespace: default}
spec: {selector: {matchLabels: {app: backend}}, action: DENY, rules: [{}]}
---
kind: AuthorizationPolicy
metadata: {name: allow-frontend-get-data, namespace: default}
spec:
  selector: {matchLabels: {app: backend}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/frontend]}}]
    to: [{operation: {methods: [GET]}}]
)");
  const auto f = l.with("TG101");
  REQUIRE(f.size() == 1);
  CHECK(f[0]->severity == policy::Finding::Severity::kError);
  CHECK(f[0]->object == "default/allow-frontend-get-data");
  CHECK_THAT(f[0]->message, Catch::Contains("can never take effect"));
  CHECK_THAT(f[0]->message, Catch::Contains("default/deny-all-backend"));
  CHECK(l.with("TG104").empty());  // the frontend service account exists
  CHECK(l.with("TG105").size() == 1);
  CHECK(l.with("TG103").size() == 1);  // methods without ports will meet TCP
}

TEST_CASE("lint finds selectors matching nothing and principals naming missing accounts") {
  const auto l = run(std::string(kBackend) + R"(
---
kind: AuthorizationPolicy
metadata: {name: typo, namespace: default}
spec:
  selector: {matchLabels: {app: backnd}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/frontnd], serviceAccounts: []}}]
---
kind: AuthorizationPolicy
metadata: {name: nothing, namespace: default}
spec: {action: DENY}
)");
  const auto sel = l.with("TG102");
  REQUIRE(sel.size() == 1);
  CHECK(sel[0]->object == "default/typo");
  const auto sa = l.with("TG104");
  REQUIRE(sa.size() == 1);
  CHECK(sa[0]->path == "spec.rules[0].from[0].source.principals[0]");
  CHECK(sa[0]->severity == policy::Finding::Severity::kWarning);
  const auto never = l.with("TG107");
  REQUIRE(never.size() == 1);
  CHECK_THAT(never[0]->message, Catch::Contains("never matches"));
  CHECK(l.with("TG101").empty());
}

TEST_CASE("lint reports validation findings too, and a deny-all without ALLOW is not TG101") {
  const auto l = run(std::string(kBackend) + R"(
---
kind: AuthorizationPolicy
metadata: {name: d, namespace: default}
spec: {action: DENY, rules: [{}, {to: [{operation: {ports: [abc]}}]}]}
)");
  CHECK(l.with("TG101").empty());
  const auto bad = l.with("TG003");
  REQUIRE(bad.size() == 1);
  CHECK(bad[0]->path == "spec.rules[1].to[0].operation.ports[0]");
}

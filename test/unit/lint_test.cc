#include "tollgate/lint/lint.h"

#include <catch2/catch.hpp>
#include <memory>

#include "support/fixtures.h"
#include "tollgate/source/manifests.h"

using namespace tollgate;

namespace {

struct Linted {
  source::ClusterState state;
  std::vector<const policy::Policy*> policies;
  lint::Context context;
  std::vector<policy::Finding> findings;
  std::vector<const policy::Finding*> with(const std::string& code) const {
    std::vector<const policy::Finding*> out;
    for (const auto& f : findings) {
      if (f.code == code) out.push_back(&f);
    }
    return out;
  }
};

// On the heap: the context points into the state, so the two never move apart.
std::unique_ptr<Linted> run(const std::string& yaml) {
  auto owner = std::make_unique<Linted>();
  Linted& l = *owner;
  auto objects = source::read_text(yaml, "t.yaml");
  INFO((objects.ok() ? "" : objects.error().message));
  REQUIRE(objects.ok());
  source::add_objects(l.state, std::move(*objects));
  for (const auto& p : l.state.policies) l.policies.push_back(&p);
  lint::Context& in = l.context;
  in.policies = l.policies;
  in.workloads = l.state.workloads;
  in.services = l.state.services;
  in.service_accounts = &l.state.service_accounts;
  in.namespaces = &l.state.namespaces;
  l.findings = lint::lint_all(in);
  return owner;
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
  const auto f = l->with("TG101");
  REQUIRE(f.size() == 1);
  CHECK(f[0]->severity == policy::Finding::Severity::kError);
  CHECK(f[0]->object == "default/allow-frontend-get-data");
  CHECK_THAT(f[0]->message, Catch::Contains("can never take effect"));
  CHECK_THAT(f[0]->message, Catch::Contains("default/deny-all-backend"));
  CHECK(l->with("TG104").empty());  // the frontend service account exists
  CHECK(l->with("TG105").size() == 1);
  CHECK(l->with("TG103").empty());  // no Service declares a TCP port: traffic is HTTP
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
  const auto sel = l->with("TG102");
  REQUIRE(sel.size() == 1);
  CHECK(sel[0]->object == "default/typo");
  const auto sa = l->with("TG104");
  REQUIRE(sa.size() == 1);
  CHECK(sa[0]->path == "spec.rules[0].from[0].source.principals[0]");
  CHECK(sa[0]->severity == policy::Finding::Severity::kWarning);
  const auto never = l->with("TG107");
  REQUIRE(never.size() == 1);
  CHECK_THAT(never[0]->message, Catch::Contains("never matches"));
  CHECK(l->with("TG101").empty());
}

TEST_CASE("lint reports validation findings too, and a deny-all without ALLOW is not TG101") {
  const auto l = run(std::string(kBackend) + R"(
---
kind: AuthorizationPolicy
metadata: {name: d, namespace: default}
spec: {action: DENY, rules: [{}, {to: [{operation: {ports: [abc]}}]}]}
)");
  CHECK(l->with("TG101").empty());
  const auto bad = l->with("TG003");
  REQUIRE(bad.size() == 1);
  CHECK(bad[0]->path == "spec.rules[1].to[0].operation.ports[0]");
}

TEST_CASE("lint warns when HTTP-only fields meet a port a Service declares as TCP") {
  const auto l = run(R"(
apiVersion: apps/v1
kind: Deployment
metadata: {name: db, namespace: data}
spec:
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: pg, ports: [{containerPort: 5432, name: pg}, {containerPort: 8080}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: data}
spec:
  selector: {app: db}
  ports:
  - {name: tcp-postgres, port: 5432, targetPort: pg}
  - {name: http-admin, port: 80, targetPort: 8080}
---
kind: AuthorizationPolicy
metadata: {name: deny-get, namespace: data}
spec: {action: DENY, rules: [{to: [{operation: {methods: [DELETE]}}]}]}
---
kind: AuthorizationPolicy
metadata: {name: allow-admin, namespace: data}
spec: {rules: [{to: [{operation: {methods: [GET], ports: ["8080"]}}]}]}
---
kind: AuthorizationPolicy
metadata: {name: allow-pg, namespace: data}
spec: {rules: [{to: [{operation: {paths: [/x], ports: ["5432"]}}]}]}
)");
  const auto f = l->with("TG103");
  REQUIRE(f.size() == 2);
  CHECK(f[0]->object == "data/allow-pg");
  CHECK_THAT(f[0]->message, Catch::Contains("port 5432 (service db port 5432, protocol tcp)"));
  CHECK_THAT(f[0]->message, Catch::Contains("drops this ALLOW rule"));
  CHECK(f[1]->object == "data/deny-get");
  CHECK_THAT(f[1]->message, Catch::Contains("matches every such connection"));
}

TEST_CASE("lint_policy answers for one policy what lint_all says of it, without validation") {
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
  - from: [{source: {principals: [cluster.local/ns/default/sa/ghost]}}]
    to: [{operation: {methods: [GET], ports: [abc]}}]
)");
  for (const auto* p : l->policies) {
    INFO(p->key());
    std::vector<std::string> from_all, from_one;
    for (const auto& f : l->findings) {
      if (f.object == p->key()) from_all.push_back(f.code + " " + f.path);
    }
    for (const auto& f : p->findings) {
      if (f.object == p->key()) from_one.push_back(f.code + " " + f.path);
    }
    for (const auto& f : lint::lint_policy(*p, l->context)) {
      CHECK(f.object == p->key());
      from_one.push_back(f.code + " " + f.path);
    }
    CHECK(from_one == from_all);
  }
  const auto allow = l->with("TG101");
  REQUIRE(allow.size() == 1);
  CHECK(l->with("TG104").size() == 1);
}

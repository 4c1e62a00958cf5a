#include <catch2/catch.hpp>

#include "support/fixtures.h"

using namespace tollgate;
using tollgate::testing::mk_policy;

namespace {

const policy::Finding* find(const policy::Policy& p, const std::string& path) {
  for (const auto& f : p.findings) {
    if (f.path == path) return &f;
  }
  return nullptr;
}

}  // namespace

TEST_CASE("a complete v1 policy parses into the model with every field") {
  const auto p = mk_policy(R"(
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-x, namespace: foo, annotations: {istio.io/dry-run: "true"}}
spec:
  selector: {matchLabels: {app: backend}}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/foo/sa/a]
        notNamespaces: [bar]
        ipBlocks: [10.0.0.0/8]
        requestPrincipals: ["iss/sub"]
    to:
    - operation: {methods: [GET], paths: ["/a*"], ports: ["80", 8080], notHosts: [x.com]}
    when:
    - {key: "request.headers[X-Token]", values: [abc]}
    - {key: "request.auth.claims[groups]", notValues: [guest]}
)");
  CHECK(p.findings.empty());
  CHECK(p.key() == "foo/allow-x");
  CHECK(p.action == policy::Action::kAllow);
  CHECK(p.dry_run);
  REQUIRE(p.selector);
  CHECK(p.selector->at("app") == "backend");
  REQUIRE(p.rules.size() == 1);
  const auto& r = p.rules[0];
  REQUIRE(r.from.size() == 1);
  CHECK(r.from[0].matches.size() == 4);
  REQUIRE(r.to.size() == 1);
  CHECK(r.to[0].matches.size() == 4);
  bool ports_seen = false;
  for (const auto& m : r.to[0].matches) {
    if (m.attr == policy::Attr::kPort) {
      ports_seen = true;
      CHECK(m.values == std::vector<std::string>{"80", "8080"});
      CHECK(m.values_path == "spec.rules[0].to[0].operation.ports");
    }
  }
  CHECK(ports_seen);
  REQUIRE(r.when.size() == 2);
  CHECK(r.when[0].arg == "x-token");
  CHECK(r.when[1].not_values == std::vector<std::string>{"guest"});
}

TEST_CASE("validation errors name the object and the field path of the bad value") {
  const auto p = mk_policy(R"(
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: allow-x, namespace: default}
spec:
  rules:
  - {}
  - to:
    - operation: {ports: ["80", "8080", "abc"]}
)");
  const auto* f = find(p, "spec.rules[1].to[0].operation.ports[2]");
  REQUIRE(f != nullptr);
  CHECK(f->object == "default/allow-x");
  CHECK(f->severity == policy::Finding::Severity::kError);
  CHECK(f->message == "\"abc\" is not a port");
}

TEST_CASE("spec: {}, rules: [] and rules: [{}] are three different things") {
  const auto none = mk_policy("kind: AuthorizationPolicy\nmetadata: {name: a}\nspec: {}\n");
  CHECK_FALSE(none.rules_present);
  CHECK(none.namespace_ == "default");
  const auto empty_list =
      mk_policy("kind: AuthorizationPolicy\nmetadata: {name: a}\nspec: {rules: []}\n");
  CHECK_FALSE(empty_list.rules_present);
  const auto empty_rule =
      mk_policy("kind: AuthorizationPolicy\nmetadata: {name: a}\nspec: {rules: [{}]}\n");
  CHECK(empty_rule.rules_present);
  REQUIRE(empty_rule.rules.size() == 1);
  CHECK(empty_rule.rules[0].from.empty());
  CHECK_FALSE(empty_rule.rules[0].null_rule);
}

TEST_CASE("wrong types never throw; they are findings and the model fails closed") {
  const auto p = mk_policy(R"(
kind: AuthorizationPolicy
metadata: {name: weird, namespace: ns}
spec:
  action: DENY
  selector: {matchLabels: {app: [1, 2]}}
  rules:
  - from: "not a list"
  - to: [{operation: {methods: GET}}]
  - when: [{key: source.ip, values: [42]}]
  - 7
  - null
)");
  CHECK(p.has_errors());
  REQUIRE(p.selector);
  CHECK(p.selector->empty());  // unreadable selector selects the whole namespace
  REQUIRE(p.rules.size() == 5);
  CHECK(p.rules[0].malformed);
  CHECK(p.rules[1].to[0].matches.at(0).bad_values == 1);
  CHECK(p.rules[2].when.at(0).bad_values == 1);
  CHECK(p.rules[3].malformed);
  CHECK(p.rules[4].null_rule);
  CHECK(find(p, "spec.rules[0].from") != nullptr);
  CHECK(find(p, "spec.rules[2].when[0].values[0]") != nullptr);
}

TEST_CASE("non-object inputs and a non-list rules field are findings, not crashes") {
  const auto a = policy::parse_policy(nlohmann::json::array());
  CHECK(a.has_errors());
  const auto b = mk_policy("kind: AuthorizationPolicy\nmetadata: {name: b}\nspec: {rules: 5}\n");
  CHECK(b.has_errors());
  CHECK(b.rules_present);
  REQUIRE(b.rules.size() == 1);
  CHECK(b.rules[0].malformed);
  const auto c = mk_policy("kind: AuthorizationPolicy\nmetadata: {name: c}\nspec: [1]\n");
  CHECK(find(c, "spec") != nullptr);
}

TEST_CASE("unknown fields are warnings, unknown when keys make the rule invalid") {
  const auto p = mk_policy(R"(
kind: AuthorizationPolicy
metadata: {name: x}
spec:
  actoin: DENY
  rules:
  - when: [{key: destination.labels, values: [a]}]
  - when: [{key: "request.headers[]", values: [a]}]
)");
  const auto* unknown = find(p, "spec.actoin");
  REQUIRE(unknown != nullptr);
  CHECK(unknown->severity == policy::Finding::Severity::kWarning);
  CHECK(p.rules[0].invalid_reason.has_value());
  CHECK_FALSE(p.rules[1].invalid_reason.has_value());  // known key, malformed name
  CHECK(p.rules[1].when.at(0).bad_values == 1);
}

TEST_CASE("actions, providers and dry-run annotations are validated") {
  const auto bad =
      mk_policy("kind: AuthorizationPolicy\nmetadata: {name: a}\nspec: {action: BLOCK}\n");
  CHECK(bad.action == policy::Action::kUnknown);
  CHECK(find(bad, "spec.action") != nullptr);
  const auto custom = mk_policy(
      "kind: AuthorizationPolicy\nmetadata: {name: a}\nspec: {action: CUSTOM, rules: [{}]}\n");
  CHECK(find(custom, "spec.provider") != nullptr);
  const auto dry = mk_policy(
      "kind: AuthorizationPolicy\nmetadata: {name: a, annotations: {istio.io/dry-run: maybe}}\n");
  CHECK_FALSE(dry.dry_run);
  CHECK(find(dry, "metadata.annotations[istio.io/dry-run]") != nullptr);
  const auto both = mk_policy(
      "kind: AuthorizationPolicy\nmetadata: {name: a}\nspec: {selector: {}, targetRef: "
      "{kind: Gateway, group: gateway.networking.k8s.io, name: gw}}\n");
  CHECK(find(both, "spec") != nullptr);
  CHECK(both.target_refs.size() == 1);
}

#include <catch2/catch.hpp>

#include "support/fixtures.h"

using namespace tollgate;
using testing::decide;
using testing::mk_policies;
using testing::mk_workload;

namespace {

const char* kSeed = R"(
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: deny-all-backend, namespace: default}
spec:
  selector: {matchLabels: {app: backend}}
  action: DENY
  rules: [{}]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: allow-frontend-get-data, namespace: default}
spec:
  selector: {matchLabels: {app: backend}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/frontend]}}]
    to: [{operation: {methods: [GET], paths: [/api/v1/data]}}]
)";

const char* kFrontendGet =
    R"({"source":{"principal":"cluster.local/ns/default/sa/frontend"},"method":"GET",
        "path":"/api/v1/data"})";

}  // namespace

TEST_CASE("DENY with an empty rule denies every request, whatever ALLOW policies say") {
  const auto o =
      decide(mk_policies(kSeed), mk_workload("default", {{"app", "backend"}}), kFrontendGet);
  CHECK(o.decision == "DENY");
  CHECK(o.policy == "default/deny-all-backend");
  CHECK(o.rule == 0);
  CHECK_THAT(o.reason, Catch::Contains("empty rule matches every request"));
  CHECK_THAT(o.reason, Catch::Contains("DENY is evaluated before ALLOW"));
}

TEST_CASE("without the DENY policy, the seed's ALLOW rule allows exactly its request") {
  auto ps = mk_policies(kSeed);
  ps.erase(ps.begin());
  const auto w = mk_workload("default", {{"app", "backend"}});
  auto o = decide(ps, w, kFrontendGet);
  CHECK(o.decision == "ALLOW");
  CHECK(o.policy == "default/allow-frontend-get-data");
  o = decide(ps, w,
             R"({"source":{"principal":"cluster.local/ns/default/sa/frontend"},"method":"POST",
                 "path":"/api/v1/data"})");
  CHECK(o.decision == "DENY");
  CHECK(o.policy.empty());
  CHECK_THAT(o.reason, Catch::Contains("no ALLOW rule matched"));
  o = decide(ps, w, R"({"method":"GET","path":"/api/v1/data"})");  // plaintext
  CHECK(o.decision == "DENY");
}

TEST_CASE("no policy at all allows, and AUDIT never decides") {
  auto o = decide({}, mk_workload("ns"), R"({"method":"GET"})");
  CHECK(o.decision == "ALLOW");
  CHECK_THAT(o.reason, Catch::Contains("no ALLOW policy"));
  const auto audit = mk_policies(
      "kind: AuthorizationPolicy\nmetadata: {name: a, namespace: ns}\nspec: {action: AUDIT, "
      "rules: [{}]}\n");
  o = decide(audit, mk_workload("ns"), R"({"method":"GET"})");
  CHECK(o.decision == "ALLOW");
  CHECK(o.policy.empty());
}

TEST_CASE("HTTP-only fields: an ALLOW rule is dropped on TCP, a DENY rule widens") {
  const auto ps = mk_policies(R"(
kind: AuthorizationPolicy
metadata: {name: allow-get, namespace: ns}
spec: {rules: [{to: [{operation: {methods: [GET], ports: ["9000"]}}]}]}
---
kind: AuthorizationPolicy
metadata: {name: deny-get, namespace: ns}
spec: {action: DENY, rules: [{to: [{operation: {methods: [GET], ports: ["9001"]}}]}]}
)");
  const auto w = mk_workload("ns");
  auto o = decide(ps, w, R"({"protocol":"tcp","port":9000})");
  CHECK(o.decision == "DENY");
  CHECK(o.policy.empty());
  CHECK_THAT(o.reason, Catch::Contains("HTTP-only"));
  o = decide(ps, w, R"({"protocol":"tcp","port":9001})");
  CHECK(o.decision == "DENY");
  CHECK(o.policy == "ns/deny-get");
  CHECK_THAT(o.reason, Catch::Contains("widens"));
  o = decide(ps, w, R"({"protocol":"http","port":9000,"method":"GET"})");
  CHECK(o.decision == "ALLOW");
}

TEST_CASE("negative fields match what is absent: no header, no JWT, no peer certificate") {
  const auto ps = mk_policies(R"(
kind: AuthorizationPolicy
metadata: {name: d, namespace: ns}
spec:
  action: DENY
  rules:
  - when: [{key: "request.headers[x-token]", notValues: [admin]}]
  - from: [{source: {notRequestPrincipals: ["*"]}}]
    to: [{operation: {paths: [/jwt]}}]
  - from: [{source: {notPrincipals: ["*"]}}]
    to: [{operation: {paths: [/mtls]}}]
)");
  const auto w = mk_workload("ns");
  CHECK(decide(ps, w, R"({"path":"/"})").decision == "DENY");
  CHECK(decide(ps, w, R"({"path":"/","headers":{"x-token":"admin"}})").decision == "ALLOW");
  CHECK(decide(ps, w, R"({"path":"/jwt","headers":{"x-token":"admin"}})").decision == "DENY");
  CHECK(decide(ps, w, R"({"path":"/jwt","headers":{"x-token":"admin"},"requestPrincipal":"i/s"})")
            .decision == "ALLOW");
  CHECK(decide(ps, w, R"({"path":"/mtls","headers":{"x-token":"admin"}})").decision == "DENY");
  CHECK(decide(ps, w,
               R"({"path":"/mtls","headers":{"x-token":"admin"},"source":{"principal":"a/b"}})")
            .decision == "ALLOW");
}

TEST_CASE("exact, prefix, suffix and presence matching, case rules per field") {
  const auto ps = mk_policies(R"(
kind: AuthorizationPolicy
metadata: {name: a, namespace: ns}
spec:
  rules:
  - to: [{operation: {hosts: ["*.Example.com"], methods: [GET], paths: ["/api/*"]}}]
  - to: [{operation: {paths: ["*.txt"]}}]
  - when: [{key: "request.headers[x-present]", values: ["*"]}]
)");
  const auto w = mk_workload("ns");
  CHECK(decide(ps, w, R"({"host":"WWW.EXAMPLE.COM","method":"GET","path":"/api/x"})").decision ==
        "ALLOW");
  CHECK(decide(ps, w, R"({"host":"www.example.com","method":"get","path":"/api/x"})").decision ==
        "DENY");
  CHECK(decide(ps, w, R"({"path":"/files/a.txt?download=1"})").decision == "ALLOW");
  CHECK(decide(ps, w, R"({"path":"/x","headers":{"x-present":""}})").decision == "ALLOW");
  CHECK(decide(ps, w, R"({"path":"/x"})").decision == "DENY");
}

TEST_CASE("identity fields: namespaces, service accounts, trust domains, IP blocks") {
  const auto ps = mk_policies(R"(
kind: AuthorizationPolicy
metadata: {name: a, namespace: ns}
spec:
  rules:
  - from: [{source: {namespaces: ["prod-*"]}}]
  - from: [{source: {serviceAccounts: [sleep]}}]
  - from: [{source: {trustDomains: ["*.example.org"]}}]
  - from: [{source: {ipBlocks: [192.168.0.0/16], notIpBlocks: [192.168.1.0/24]}}]
)");
  const auto w = mk_workload("ns");
  auto who = [&](const std::string& principal, const std::string& ip = "10.9.9.9") {
    return decide(ps, w, R"({"source":{"principal":")" + principal + R"(","ip":")" + ip + R"("}})")
        .decision;
  };
  CHECK(who("td/ns/prod-eu/sa/x") == "ALLOW");
  CHECK(who("td/ns/dev/sa/x") == "DENY");
  CHECK(who("td/ns/ns/sa/sleep") == "ALLOW");
  CHECK(who("td/ns/ns/sa/sleep-2") == "DENY");   // the SA ends at '/' or end
  CHECK(who("td/ns/other/sa/sleep") == "DENY");  // bare SA = the policy's namespace
  CHECK(who("a.example.org/ns/x/sa/y") == "ALLOW");
  CHECK(who("example.org/ns/x/sa/y") == "DENY");
  CHECK(who("td/ns/x/sa/y", "192.168.7.1") == "ALLOW");
  CHECK(who("td/ns/x/sa/y", "192.168.1.7") == "DENY");
}

TEST_CASE("JWT claims: nested, lists, space-delimited scopes, numbers never match") {
  const auto ps = mk_policies(R"(
kind: AuthorizationPolicy
metadata: {name: a, namespace: ns}
spec:
  rules:
  - to: [{operation: {paths: [/n]}}]
    when: [{key: "request.auth.claims[nested][k]", values: [v]}]
  - to: [{operation: {paths: [/g]}}]
    when: [{key: "request.auth.claims[groups]", values: [admin]}]
  - to: [{operation: {paths: [/s]}}]
    when: [{key: "request.auth.claims[scope]", values: [write]}]
  - to: [{operation: {paths: [/num]}}]
    when: [{key: "request.auth.claims[level]", values: ["5"]}]
)");
  const auto w = mk_workload("ns");
  auto with = [&](const char* path, const char* claims) {
    return decide(ps, w, std::string(R"({"path":")") + path + R"(","jwtClaims":)" + claims + "}")
        .decision;
  };
  CHECK(with("/n", R"({"nested":{"k":"v"}})") == "ALLOW");
  CHECK(with("/n", R"({"nested":{"k":"w"}})") == "DENY");
  CHECK(with("/g", R"({"groups":["dev","admin"]})") == "ALLOW");
  CHECK(with("/s", R"({"scope":"read write"})") == "ALLOW");
  CHECK(with("/num", R"({"level":5})") == "DENY");
}

TEST_CASE("CUSTOM: a match asks the provider; no answer fails closed; no match skips it") {
  const auto ps = mk_policies(R"(
kind: AuthorizationPolicy
metadata: {name: ext, namespace: ns}
spec: {action: CUSTOM, provider: {name: authz}, rules: [{to: [{operation: {paths: [/admin*]}}]}]}
)");
  policy::MeshConfig mesh;
  mesh.extension_providers = {{"authz", "grpc"}};
  const auto w = mk_workload("ns");
  auto o = decide(ps, w, R"({"path":"/admin","extAuthzDecision":"DENY"})", mesh);
  CHECK(o.decision == "DENY");
  CHECK(o.policy == "ns/ext");
  CHECK(decide(ps, w, R"({"path":"/admin","extAuthzDecision":"ALLOW"})", mesh).decision == "ALLOW");
  o = decide(ps, w, R"({"path":"/admin"})", mesh);
  CHECK(o.decision == "DENY");
  CHECK_THAT(o.reason, Catch::Contains("failing closed"));
  CHECK(decide(ps, w, R"({"path":"/public"})", mesh).decision == "ALLOW");
}

TEST_CASE("dry-run and audit results are reported beside the decision") {
  const auto ps = mk_policies(R"(
kind: AuthorizationPolicy
metadata: {name: dry, namespace: ns, annotations: {istio.io/dry-run: "true"}}
spec: {action: DENY, rules: [{}]}
---
kind: AuthorizationPolicy
metadata: {name: aud, namespace: ns}
spec: {action: AUDIT, rules: [{}]}
)");
  const auto t = compile::compile_table(ps, mk_workload("ns"), {});
  const auto req = testing::mk_request(R"({"path":"/"})");
  eval::PreparedRequest p;
  eval::prepare(req, t.path_normalization, p);
  const auto d = eval::evaluate(t, p);
  const auto j = eval::decision_json(t, d, p);
  CHECK(j["decision"] == "ALLOW");
  CHECK(j["dryRun"]["decision"] == "DENY");
  CHECK(j["dryRun"]["policy"] == "ns/dry");
  CHECK(j["audit"]["policy"] == "ns/aud");
}

TEST_CASE("a path Envoy rejects (%00) is denied before any policy") {
  const auto o = decide({}, mk_workload("ns"), R"({"path":"/a%00"})");
  CHECK(o.decision == "DENY");
  CHECK_THAT(o.reason, Catch::Contains("rejected"));
}

TEST_CASE("10,000 exact principals are looked up, not scanned, and still match exactly") {
  std::string yaml =
      "kind: AuthorizationPolicy\nmetadata: {name: big, namespace: ns}\nspec:\n  rules:\n  - "
      "from: [{source: {principals: [";
  for (int i = 0; i < 10000; ++i) {
    if (i > 0) yaml += ',';
    yaml += "td/ns/n/sa/s";
    yaml += std::to_string(i);
  }
  yaml += "]}}]\n";
  const auto ps = mk_policies(yaml);
  const auto w = mk_workload("ns");
  CHECK(decide(ps, w, R"({"source":{"principal":"td/ns/n/sa/s9999"}})").decision == "ALLOW");
  CHECK(decide(ps, w, R"({"source":{"principal":"td/ns/n/sa/s10000"}})").decision == "DENY");
}

TEST_CASE("mismatch says which fields of a rule the request failed, and is empty on a match") {
  auto ps = mk_policies(kSeed);
  ps.erase(ps.begin());
  const auto t = compile::compile_table(ps, mk_workload("default", {{"app", "backend"}}), {});
  REQUIRE(t.allow.size() == 1);
  auto why = [&](const char* req_text) {
    const auto req = testing::mk_request(req_text);
    eval::PreparedRequest p;
    eval::prepare(req, t.path_normalization, p);
    return eval::mismatch(t.allow[0], p);
  };
  CHECK(why(kFrontendGet).empty());
  CHECK(why(R"({"method":"GET","path":"/api/v1/data"})") ==
        "source.principal is absent, not one of [cluster.local/ns/default/sa/frontend]");
  CHECK(why(R"({"source":{"principal":"cluster.local/ns/default/sa/frontend"},"method":"PUT",
                "path":"/x"})") ==
        "request.method is \"PUT\", not one of [GET]; request.path is \"/x\", not one of "
        "[/api/v1/data]");
  CHECK_THAT(why(R"({"protocol":"tcp"})"), Catch::Contains("not generate it for TCP"));
}

TEST_CASE("append_decision_json writes exactly what decision_json().dump() writes") {
  const auto ps = mk_policies(R"(
kind: AuthorizationPolicy
metadata: {name: "q\"uote\\d", namespace: ns, annotations: {istio.io/dry-run: "true"}}
spec: {action: DENY, rules: [{to: [{operation: {paths: [/dry]}}]}]}
---
kind: AuthorizationPolicy
metadata: {name: aud, namespace: ns}
spec: {action: AUDIT, rules: [{to: [{operation: {paths: [/a*]}}]}]}
---
kind: AuthorizationPolicy
metadata: {name: "caf\u00e9", namespace: ns}
spec: {rules: [{to: [{operation: {paths: [/a]}}]}]}
---
kind: AuthorizationPolicy
metadata: {name: tab, namespace: ns}
spec: {rules: [{to: [{operation: {paths: ["/b"]}}]}]}
)");
  const auto t = compile::compile_table(ps, mk_workload("ns"), {});
  for (const char* req : {R"({"path":"/a"})", R"({"path":"/b"})", R"({"path":"/dry"})",
                          R"({"path":"/zzz"})", R"({"path":"/x%00"})"}) {
    INFO(req);
    const auto r = testing::mk_request(req);
    eval::PreparedRequest p;
    eval::prepare(r, t.path_normalization, p);
    const auto d = eval::evaluate(t, p);
    std::string out = "prefix:";
    eval::append_decision_json(out, t, d, p);
    CHECK(out == "prefix:" + eval::decision_json(t, d, p).dump());
  }
}

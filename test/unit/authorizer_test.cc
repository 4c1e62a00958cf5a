#include "tollgate/agent/authorizer.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "support/fixtures.h"
#include "tollgate/compile/compile.h"

using namespace tollgate;
using nlohmann::json;

namespace {

std::string header(const agent::Answer& a, const std::string& name) {
  for (const auto& [n, v] : a.headers) {
    if (n == name) return v;
  }
  return "(absent)";
}

std::shared_ptr<agent::ActiveTable> seed_table() {
  auto t = std::make_shared<agent::ActiveTable>();
  t->table = compile::compile_table(testing::mk_policies(R"(
kind: AuthorizationPolicy
metadata: {name: allow-get, namespace: default}
spec: {rules: [{to: [{operation: {methods: [GET]}}]}]}
---
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec: {action: DENY, rules: [{to: [{operation: {paths: ["/admin*"]}}]}]}
)"),
                                    testing::mk_workload("default"), {});
  return t;
}

}  // namespace

TEST_CASE("without a table every request is denied, and says no-table") {
  agent::Authorizer az;
  const auto a = az.decide(testing::mk_request(R"({"method":"GET","path":"/"})"));
  CHECK_FALSE(a.allowed);
  CHECK(header(a, "X-Tollgate-Decision") == "DENY");
  CHECK(header(a, "X-Tollgate-Reason") == "no-table");
  CHECK(header(a, "X-Tollgate-Policy") == "(absent)");
  CHECK(json::parse(a.body)["decision"] == "DENY");
}

TEST_CASE("with a table the answer is the engine's decision, with the deciding policy and rule") {
  agent::Authorizer az;
  az.activate(seed_table());
  auto a = az.decide(testing::mk_request(R"({"method":"GET","path":"/x"})"));
  CHECK(a.allowed);
  CHECK(header(a, "X-Tollgate-Decision") == "ALLOW");
  CHECK(header(a, "X-Tollgate-Policy") == "default/allow-get");
  CHECK(header(a, "X-Tollgate-Rule") == "0");
  CHECK(header(a, "X-Tollgate-Reason") == "(absent)");
  a = az.decide(testing::mk_request(R"({"method":"GET","path":"/admin/x"})"));
  CHECK_FALSE(a.allowed);
  CHECK(a.policy == "default/deny-admin");
  const json body = json::parse(a.body);
  CHECK(body["decision"] == "DENY");
  CHECK(body["policy"] == "default/deny-admin");
  a = az.decide(testing::mk_request(R"({"method":"POST","path":"/x"})"));
  CHECK_FALSE(a.allowed);
  CHECK(header(a, "X-Tollgate-Policy") == "(absent)");  // default deny: no policy decided
}

TEST_CASE("an unreadable request is denied with its reason, never answered otherwise") {
  const auto a = agent::Authorizer::refuse("no X-Original-Method header");
  CHECK_FALSE(a.allowed);
  CHECK(header(a, "X-Tollgate-Reason") == "unreadable-request");
  CHECK_THAT(json::parse(a.body)["reason"].get<std::string>(),
             Catch::Contains("no X-Original-Method header"));
}

// libFuzzer target: arbitrary bytes as an Envoy ext_authz CheckRequest -> the request mapping
// -> a decision on a table whose rules read every attribute the mapping fills -> the
// CheckResponse, serialized and read back. The first byte picks the mapping options. Nothing
// may crash, throw or trip a sanitizer; the answer must be what it claims (allowed exactly when
// status OK, a 403 with a JSON body otherwise), and a mapped request can never contradict
// itself (requestPrincipal against jwtClaims).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

#include "envoy/service/auth/v3/external_auth.pb.h"
#include "tollgate/agent/authorizer.h"
#include "tollgate/agent/grpc_mapping.h"
#include "tollgate/agent/grpc_response.h"
#include "tollgate/compile/compile.h"
#include "tollgate/policy/parse.h"

namespace {

using namespace tollgate;

constexpr const char* kPolicies = R"(
kind: AuthorizationPolicy
metadata: {name: deny, namespace: default}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin*"], notHosts: ["*.internal"]}}]
  - from: [{source: {remoteIpBlocks: ["203.0.113.0/24"], notIpBlocks: ["10.0.0.0/8"]}}]
  - when: [{key: "request.headers[x-token]", values: ["bad"]}]
---
kind: AuthorizationPolicy
metadata: {name: allow, namespace: default}
spec:
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/*"], namespaces: ["default"]}}]
    to: [{operation: {methods: ["GET"], ports: ["8080"]}}]
  - from: [{source: {requestPrincipals: ["https://issuer/*"]}}]
    when: [{key: "request.auth.claims[groups]", values: ["admin"]}, {key: request.auth.audiences, values: ["a"]}]
  - when: [{key: destination.ip, values: ["10.0.0.9"]}, {key: connection.sni, values: ["*.local"]}]
  - when: [{key: "experimental.envoy.filters.http.example[tier]", values: ["gold"]}]
  - from: [{source: {notPrincipals: ["*"], ipBlocks: ["::/0"]}}]
    to: [{operation: {hosts: ["backend*"]}}]
)";

const agent::Authorizer& authorizer() {
  static const agent::Authorizer* a = [] {
    auto* az = new agent::Authorizer();
    auto docs = policy::parse_documents(kPolicies, "fuzz");
    if (!docs.ok()) std::abort();
    std::vector<policy::Policy> ps;
    for (const auto& d : *docs) ps.push_back(policy::parse_policy(d.object));
    policy::Workload w;
    w.namespace_ = "default";
    auto t = std::make_shared<agent::ActiveTable>();
    t->table = compile::compile_table(ps, w, {});
    az->activate(std::move(t));
    return az;
  }();
  return *a;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0 || size > (1u << 20)) return 0;
  agent::CheckMappingOptions options;
  if ((data[0] & 1) != 0) options.jwt_payload_key = "payload";
  if ((data[0] & 2) != 0) options.max_headers = 8;
  if ((data[0] & 4) != 0) options.jwt_metadata_namespace = "n";
  envoy::service::auth::v3::CheckRequest check;
  agent::Answer answer;
  if (!check.ParseFromArray(data + 1, static_cast<int>(size - 1))) {
    answer = agent::Authorizer::refuse("not a CheckRequest");
  } else if (auto r = agent::map_check_request(check, options); !r.ok()) {
    if (r.error().message.empty()) std::abort();  // a refusal says why
    answer = agent::Authorizer::refuse(r.error().message);
  } else {
    if (eval::request_principal_conflict(*r)) std::abort();
    if (r->tcp && (r->method || !r->headers.empty() || !r->jwt_claims.is_null())) std::abort();
    answer = authorizer().decide(*r);
  }
  envoy::service::auth::v3::CheckResponse response;
  agent::fill_check_response(answer, response);
  envoy::service::auth::v3::CheckResponse back;
  if (!back.ParseFromString(response.SerializeAsString())) std::abort();
  const bool ok = back.status().code() == agent::kGrpcOk;
  if (ok != answer.allowed || ok != back.has_ok_response()) std::abort();
  if (!ok) {
    if (back.status().code() != agent::kGrpcPermissionDenied) std::abort();
    if (back.denied_response().status().code() != envoy::type::v3::Forbidden) std::abort();
    const auto body = nlohmann::json::parse(back.denied_response().body(), nullptr, false);
    if (body.is_discarded() || body["decision"] != "DENY") std::abort();
  }
  return 0;
}

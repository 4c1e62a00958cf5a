#include "tollgate/agent/grpc_response.h"

#include <algorithm>
#include <array>
#include <string_view>

#include "envoy/service/auth/v3/external_auth.pb.h"

namespace tollgate::agent {
namespace {

namespace auth = envoy::service::auth::v3;
namespace core = envoy::config::core::v3;

// Every header an Answer may carry. On allow, those the answer does not set are removed from
// the request going upstream, so that a client cannot pass off its own as the agent's.
constexpr std::array<std::string_view, 4> kAnswerHeaders = {
    "x-tollgate-decision", "x-tollgate-policy", "x-tollgate-rule", "x-tollgate-reason"};

void add_header(google::protobuf::RepeatedPtrField<core::HeaderValueOption>& headers,
                std::string_view name, std::string_view value) {
  core::HeaderValueOption* h = headers.Add();
  h->mutable_header()->set_key(std::string(name));
  h->mutable_header()->set_value(std::string(value));
  // Replace a header of the same name rather than appending to it.
  h->mutable_append()->set_value(false);
}

bool same_name(std::string_view a, std::string_view lower) {
  return a.size() == lower.size() &&
         std::equal(a.begin(), a.end(), lower.begin(), [](char x, char y) {
           return (x >= 'A' && x <= 'Z' ? static_cast<char>(x - 'A' + 'a') : x) == y;
         });
}

std::string denial_message(const Answer& a) {
  std::string m = "tollgate: DENY";
  if (!a.policy.empty()) return m + " by " + a.policy + " rule " + std::to_string(a.rule);
  for (const auto& [name, value] : a.headers) {
    if (name == "X-Tollgate-Reason") return m + " (" + value + ")";
  }
  return m;
}

}  // namespace

void fill_check_response(const Answer& a, auth::CheckResponse& out) {
  out.Clear();
  if (a.allowed) {
    out.mutable_status()->set_code(kGrpcOk);
    auth::OkHttpResponse* ok = out.mutable_ok_response();
    for (const auto& [name, value] : a.headers) add_header(*ok->mutable_headers(), name, value);
    for (std::string_view name : kAnswerHeaders) {
      const bool set = std::any_of(a.headers.begin(), a.headers.end(),
                                   [&](const auto& h) { return same_name(h.first, name); });
      if (!set) ok->add_headers_to_remove(std::string(name));
    }
    return;
  }
  out.mutable_status()->set_code(kGrpcPermissionDenied);
  out.mutable_status()->set_message(denial_message(a));
  auth::DeniedHttpResponse* denied = out.mutable_denied_response();
  denied->mutable_status()->set_code(envoy::type::v3::Forbidden);
  for (const auto& [name, value] : a.headers) add_header(*denied->mutable_headers(), name, value);
  add_header(*denied->mutable_headers(), "Content-Type", "application/json");
  denied->set_body(a.body);
}

}  // namespace tollgate::agent

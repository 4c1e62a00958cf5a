#include "tollgate/agent/grpc_response.h"

#include <catch2/catch.hpp>
#include <map>
#include <nlohmann/json.hpp>

#include "envoy/service/auth/v3/external_auth.pb.h"

using namespace tollgate;
namespace auth = envoy::service::auth::v3;

namespace {

using Headers = google::protobuf::RepeatedPtrField<envoy::config::core::v3::HeaderValueOption>;

// name -> value; every header must replace (append false), never append.
std::map<std::string, std::string> replacing(const Headers& hs) {
  std::map<std::string, std::string> out;
  for (const auto& h : hs) {
    CHECK(h.has_append());
    CHECK_FALSE(h.append().value());
    out[h.header().key()] = h.header().value();
  }
  return out;
}

agent::Answer mk_answer(bool allowed, std::vector<std::pair<std::string, std::string>> headers,
                        std::string policy = "", int rule = -1) {
  agent::Answer a;
  a.allowed = allowed;
  a.headers = std::move(headers);
  a.policy = std::move(policy);
  a.rule = rule;
  a.body = R"({"decision":")" + std::string(allowed ? "ALLOW" : "DENY") + R"("})";
  return a;
}

}  // namespace

TEST_CASE("an allow is status OK, its headers replace the request's, and unset ones are removed") {
  auth::CheckResponse r;
  r.mutable_denied_response()->set_body("stale");  // replaced, not merged
  agent::fill_check_response(mk_answer(true,
                                       {{"X-Tollgate-Decision", "ALLOW"},
                                        {"X-Tollgate-Policy", "default/allow-get"},
                                        {"X-Tollgate-Rule", "0"}},
                                       "default/allow-get", 0),
                             r);
  CHECK(r.status().code() == 0);
  REQUIRE(r.has_ok_response());
  CHECK_FALSE(r.has_denied_response());
  CHECK(replacing(r.ok_response().headers()) ==
        std::map<std::string, std::string>{{"X-Tollgate-Decision", "ALLOW"},
                                           {"X-Tollgate-Policy", "default/allow-get"},
                                           {"X-Tollgate-Rule", "0"}});
  CHECK(std::vector<std::string>(r.ok_response().headers_to_remove().begin(),
                                 r.ok_response().headers_to_remove().end()) ==
        std::vector<std::string>{"x-tollgate-reason"});

  // A default allow names no policy: a client's X-Tollgate-Policy must not reach upstream.
  agent::fill_check_response(mk_answer(true, {{"X-Tollgate-Decision", "ALLOW"}}), r);
  CHECK(std::vector<std::string>(r.ok_response().headers_to_remove().begin(),
                                 r.ok_response().headers_to_remove().end()) ==
        std::vector<std::string>{"x-tollgate-policy", "x-tollgate-rule", "x-tollgate-reason"});
}

TEST_CASE("a deny is PERMISSION_DENIED with a 403, the headers and the decision JSON body") {
  auth::CheckResponse r;
  const auto a = mk_answer(false,
                           {{"X-Tollgate-Decision", "DENY"},
                            {"X-Tollgate-Policy", "default/deny-admin"},
                            {"X-Tollgate-Rule", "1"}},
                           "default/deny-admin", 1);
  agent::fill_check_response(a, r);
  CHECK(r.status().code() == 7);
  CHECK(r.status().message() == "tollgate: DENY by default/deny-admin rule 1");
  REQUIRE(r.has_denied_response());
  CHECK_FALSE(r.has_ok_response());
  CHECK(r.denied_response().status().code() == envoy::type::v3::Forbidden);
  CHECK(static_cast<int>(r.denied_response().status().code()) == 403);
  CHECK(r.denied_response().body() == a.body);
  CHECK(replacing(r.denied_response().headers()) ==
        std::map<std::string, std::string>{{"X-Tollgate-Decision", "DENY"},
                                           {"X-Tollgate-Policy", "default/deny-admin"},
                                           {"X-Tollgate-Rule", "1"},
                                           {"Content-Type", "application/json"}});
}

TEST_CASE("a refusal is denied like any deny and says its reason in the status message") {
  auth::CheckResponse r;
  const auto a = agent::Authorizer::refuse("attributes: missing");
  agent::fill_check_response(a, r);
  CHECK(r.status().code() == 7);
  CHECK(r.status().message() == "tollgate: DENY (unreadable-request)");
  CHECK(r.denied_response().status().code() == envoy::type::v3::Forbidden);
  CHECK(nlohmann::json::parse(r.denied_response().body())["decision"] == "DENY");
  CHECK(replacing(r.denied_response().headers())["X-Tollgate-Reason"] == "unreadable-request");
}

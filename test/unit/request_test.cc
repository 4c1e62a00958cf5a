#include <catch2/catch.hpp>

#include "support/fixtures.h"

using namespace tollgate;
using eval::normalize_path;
using policy::PathNormalization;

TEST_CASE("BASE normalization decodes unreserved escapes, resolves dots, keeps the query") {
  const auto n = PathNormalization::kBase;
  CHECK(*normalize_path("/public/%2e%2e/private", n) == "/private");
  CHECK(*normalize_path("/public/%2E%2E/private", n) == "/private");
  CHECK(*normalize_path("/a/./b/../c?x=/../y", n) == "/a/c?x=/../y");
  CHECK(*normalize_path("/a\\b", n) == "/a/b");
  CHECK(*normalize_path("/%41%7e%2F", n) == "/A~%2F");  // %2F stays encoded
  CHECK(*normalize_path("/a//b", n) == "/a//b");
  CHECK(*normalize_path("/a/b/..", n) == "/a/");
  CHECK(*normalize_path("/../../x", n) == "/x");
  CHECK(*normalize_path("/a#frag", n) == "/a");
  CHECK_FALSE(normalize_path("/a%00b", n).has_value());
}

TEST_CASE("the other normalization options") {
  CHECK(*normalize_path("/a//b/../c", PathNormalization::kMergeSlashes) == "/a/c");
  CHECK(*normalize_path("/a%2Fb%5c..%2fc", PathNormalization::kDecodeAndMergeSlashes) == "/a/c");
  CHECK(*normalize_path("/a/../b", PathNormalization::kNone) == "/a/../b");
}

TEST_CASE("requests are parsed strictly, with the field named in errors") {
  auto ok = eval::parse_request(nlohmann::json::parse(
      R"({"protocol":"tcp","source":{"principal":"spiffe://td/ns/a/sa/b","ip":"10.0.0.1"},
          "port":"8080","headers":{"X-A":"1","x-a":["2","3"]},"extAuthzDecision":{"p":"deny"}})"));
  REQUIRE(ok.ok());
  CHECK(ok->tcp);
  CHECK(*ok->principal == "td/ns/a/sa/b");  // spiffe:// is accepted and removed
  CHECK(*ok->remote_ip == "10.0.0.1");      // remoteIp defaults to ip
  CHECK(*ok->port == 8080);
  REQUIRE(ok->headers.size() == 1);
  CHECK(ok->headers[0].second == "1,2,3");
  CHECK(ok->ext_authz_by_provider.at("p") == "DENY");
  auto err = [](const char* text) {
    auto r = eval::parse_request(nlohmann::json::parse(text));
    REQUIRE_FALSE(r.ok());
    return r.error().message;
  };
  CHECK(err(R"({"port":70000})") == "request.port: must be 0-65535");
  CHECK(err(R"({"protocol":"udp"})") == "request.protocol: must be \"http\" or \"tcp\"");
  CHECK(err(R"({"source":{"ip":"10.0.0.300"}})") ==
        "request.source.ip: \"10.0.0.300\" is not an IP address");
  CHECK(err(R"({"methd":"GET"})") == "request.methd: unknown field");
  CHECK(err(R"({"extAuthzDecision":"maybe"})") ==
        "request.extAuthzDecision: must be \"ALLOW\" or \"DENY\"");
  CHECK(err(R"([])") == "request: must be an object");
}

TEST_CASE("prepare lower-cases the host, strips the query for paths and splits the principal") {
  const auto r = testing::mk_request(
      R"({"source":{"principal":"td/ns/a/sa/b"},"host":"API.Example.COM","path":"/x/%2e%2e/y?q",
          "requestPrincipal":"https://issuer/path/sub"})");
  eval::PreparedRequest p;
  eval::prepare(r, PathNormalization::kBase, p);
  CHECK(p.host == "api.example.com");
  CHECK(p.path == "/y");
  CHECK(p.path_with_query == "/y?q");
  CHECK(p.uri == "spiffe://td/ns/a/sa/b");
  CHECK(p.trust_domain == "td");
  REQUIRE(p.iss != nullptr);
  CHECK(*p.iss == "https://issuer/path");
  CHECK(*p.sub == "sub");
}

TEST_CASE("prepare's shortcut for already-normal paths agrees with normalize_path") {
  const char* paths[] = {"/",      "/a/b",    "/a/b?x=/../y", "/a/.b", "/a//b",
                         "/a/./b", "/a/../b", "/%61",         "a/b",   "/a\\b",
                         "/a#x",   "/a?q#f",  "/.",           "/a/..", "//x"};
  for (auto n : {PathNormalization::kBase, PathNormalization::kMergeSlashes,
                 PathNormalization::kDecodeAndMergeSlashes, PathNormalization::kNone}) {
    for (const char* p : paths) {
      INFO(p << " with normalization " << static_cast<int>(n));
      auto r = testing::mk_request(std::string(R"({"path":)") + nlohmann::json(p).dump() + "}");
      eval::PreparedRequest prepared;
      eval::prepare(r, n, prepared);
      auto expect = normalize_path(p, n);
      REQUIRE(expect.has_value());
      CHECK(prepared.path_with_query == *expect);
    }
  }
}

namespace {

// The issuer and subject that requestPrincipals match for a request, as "iss|sub" ("-" when
// absent), or "rejected: <why>".
std::string iss_sub(const std::string& request_json) {
  const auto r = eval::parse_request(nlohmann::json::parse(request_json));
  if (!r.ok()) return "error: " + r.error().message;
  eval::PreparedRequest p;
  eval::prepare(*r, PathNormalization::kBase, p);
  if (p.rejected) return "rejected: " + *p.rejected;
  return (p.iss != nullptr ? *p.iss : "-") + "|" + (p.sub != nullptr ? *p.sub : "-");
}

}  // namespace

TEST_CASE("requestPrincipal is the token's iss/sub even when jwtClaims leaves them out") {
  CHECK(iss_sub(R"({"requestPrincipal":"https://i.example/bob"})") == "https://i.example|bob");
  CHECK(iss_sub(R"({"requestPrincipal":"https://i.example/bob","jwtClaims":{"groups":["g"]}})") ==
        "https://i.example|bob");
  CHECK(iss_sub(R"({"jwtClaims":{"iss":"i","sub":"s"}})") == "i|s");
  CHECK(iss_sub(R"({"jwtClaims":{"iss":"i"}})") == "i|-");
  CHECK(iss_sub(R"({"jwtClaims":{"iss":7,"sub":"s"}})") == "-|s");
  CHECK(iss_sub(R"({"requestPrincipal":"no-slash"})") == "no-slash|-");
}

TEST_CASE("with both, the payload's iss and sub decide where the principal splits") {
  CHECK(iss_sub(R"({"requestPrincipal":"https://i.example/team/bob",
                    "jwtClaims":{"iss":"https://i.example","sub":"team/bob"}})") ==
        "https://i.example|team/bob");
  CHECK(iss_sub(R"({"requestPrincipal":"https://i.example/team/bob",
                    "jwtClaims":{"iss":"https://i.example"}})") == "https://i.example|team/bob");
  CHECK(iss_sub(R"({"requestPrincipal":"https://i.example/team/bob",
                    "jwtClaims":{"sub":"team/bob"}})") == "https://i.example|team/bob");
}

TEST_CASE("a requestPrincipal that disagrees with jwtClaims is an error naming both") {
  CHECK(iss_sub(R"({"requestPrincipal":"a/b","jwtClaims":{"iss":"a","sub":"c"}})") ==
        "error: request.requestPrincipal \"a/b\" disagrees with jwtClaims: iss/sub is \"a/c\"");
  CHECK(iss_sub(R"({"requestPrincipal":"a/b","jwtClaims":{"iss":"x"}})") ==
        "error: request.requestPrincipal \"a/b\" disagrees with jwtClaims: iss is \"x\"");
  CHECK(iss_sub(R"({"requestPrincipal":"a/b","jwtClaims":{"sub":"x"}})") ==
        "error: request.requestPrincipal \"a/b\" disagrees with jwtClaims: sub is \"x\"");
  CHECK(iss_sub(R"({"requestPrincipal":"a/b","jwtClaims":{"iss":"a/b"}})").starts_with("error"));
  CHECK(iss_sub(R"({"requestPrincipal":"a/b","jwtClaims":{"sub":["b"]}})") ==
        "error: request.requestPrincipal \"a/b\" disagrees with jwtClaims: its iss and sub must "
        "be strings");
}

TEST_CASE("a request built without the parser that contradicts itself is rejected, not trusted") {
  eval::Request r;
  r.request_principal = "https://i.example/bob";
  r.jwt_claims = {{"iss", "https://other.example"}};
  eval::PreparedRequest p;
  eval::prepare(r, PathNormalization::kBase, p);
  REQUIRE(p.rejected.has_value());
  CHECK_THAT(*p.rejected, Catch::Contains("disagrees with jwtClaims"));
  CHECK(eval::request_principal_conflict(r).has_value());
  r.jwt_claims = {{"iss", "https://i.example"}};
  CHECK_FALSE(eval::request_principal_conflict(r).has_value());
}

TEST_CASE("normalization is idempotent, so a path a proxy already normalized is left as it is") {
  // Every path of up to 6 characters over the characters normalization acts on.
  const std::string alphabet = "/.%2fF5Cc\\a?";
  std::vector<std::string> paths = {"/"};
  for (std::size_t start = 0, len = 0; len < 6; ++len) {
    const std::size_t end = paths.size();
    for (std::size_t i = start; i < end; ++i) {
      for (char c : alphabet) paths.push_back(paths[i] + c);
    }
    start = end;
  }
  REQUIRE(paths.size() > 3'000'000);
  std::size_t checked = 0;
  for (auto n : {PathNormalization::kBase, PathNormalization::kMergeSlashes,
                 PathNormalization::kDecodeAndMergeSlashes, PathNormalization::kNone}) {
    for (std::size_t i = 0; i < paths.size(); i += 7) {  // a spread sample, all lengths
      const auto once = normalize_path(paths[i], n);
      if (!once) continue;
      const auto twice = normalize_path(*once, n);
      if (!twice || *twice != *once) {
        FAIL("normalizing " << paths[i] << " (mode " << static_cast<int>(n) << ") gives " << *once
                            << ", and again " << twice.value_or("(rejected)"));
      }
      ++checked;
    }
  }
  CHECK(checked > 1'000'000);
}

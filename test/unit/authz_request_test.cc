#include "tollgate/agent/authz_request.h"

#include <catch2/catch.hpp>

#include "support/certs.h"

using namespace tollgate;
using agent::HeaderFields;

TEST_CASE("forward auth reads the original request from the proxy's headers") {
  const HeaderFields h = {{"Host", "agent:15010"},
                          {"X-Original-Method", "GET"},
                          {"X-Original-URI", "/api/v1/data?x=1"},
                          {"X-Forwarded-Host", "backend.default.svc"},
                          {"X-Forwarded-Port", "8080"},
                          {"X-Real-IP", "10.0.0.7"},
                          {"X-Forwarded-For", "203.0.113.9, 10.0.0.7"},
                          {"X-Token", "a"},
                          {"x-token", "b"},
                          {"Content-Length", "0"}};
  auto r = agent::map_forward_auth(h, {});
  REQUIRE(r.ok());
  CHECK(*r->method == "GET");
  CHECK(*r->path == "/api/v1/data?x=1");
  CHECK(*r->host == "backend.default.svc");
  CHECK(*r->port == 8080);
  CHECK(*r->source_ip == "10.0.0.7");
  CHECK_FALSE(r->principal.has_value());
  // The original headers, lower-cased and joined; nothing of the proxy-to-agent hop.
  CHECK(r->headers == std::vector<std::pair<std::string, std::string>>{
                          {"x-forwarded-for", "203.0.113.9, 10.0.0.7"}, {"x-token", "a,b"}});
}

TEST_CASE("forward auth falls back: Traefik's X-Forwarded-* names, Host, --port, XFF") {
  const HeaderFields h = {{"Host", "app.example"},
                          {"X-Forwarded-Method", "POST"},
                          {"X-Forwarded-Uri", "/a"},
                          {"X-Forwarded-For", "198.51.100.1,192.0.2.4"}};
  auto r = agent::map_forward_auth(h, {.port = 9000});
  REQUIRE(r.ok());
  CHECK(*r->method == "POST");
  CHECK(*r->path == "/a");
  CHECK(*r->host == "app.example");
  CHECK(*r->port == 9000);
  CHECK(*r->source_ip == "192.0.2.4");  // the last hop: the proxy's own peer
}

TEST_CASE("a request the agent cannot read is an error that says why") {
  auto err = [](const HeaderFields& h) {
    auto r = agent::map_forward_auth(h, {});
    REQUIRE_FALSE(r.ok());
    return r.error().message;
  };
  CHECK(err({{"X-Original-URI", "/"}}) == "no X-Original-Method or X-Forwarded-Method header");
  CHECK(err({{"X-Original-Method", "GET"}}) == "no X-Original-URI or X-Forwarded-Uri header");
  CHECK(err({{"X-Original-Method", "GET"}, {"X-Original-URI", "/"}, {"X-Real-IP", "nope"}}) ==
        "X-Real-IP: \"nope\" is not an IP address");
  CHECK(err({{"X-Original-Method", "GET"}, {"X-Original-URI", "/"}, {"X-Forwarded-Port", "x"}}) ==
        "X-Forwarded-Port: \"x\" is not a port");
  CHECK_THAT(err({{"X-Original-Method", "GET"},
                  {"X-Original-URI", "/"},
                  {"X-Forwarded-Tls-Client-Cert", "garbage"}}),
             Catch::StartsWith("X-Forwarded-Tls-Client-Cert: "));
}

TEST_CASE("Envoy's http_service: own method and path, XFCC's last element, XFF's last hop") {
  const HeaderFields h = {
      {"host", "backend:8080"},
      {"x-forwarded-for", "10.9.9.9,10.0.0.7"},
      {"x-forwarded-client-cert",
       "URI=spiffe://cluster.local/ns/evil/sa/forged,"
       "By=spiffe://cluster.local/ns/default/sa/backend;URI=spiffe://cluster.local/ns/default/sa/"
       "frontend"},
      {"x-real-ip", "1.2.3.4"},
      {"x-b3-traceid", "t"}};
  auto r = agent::map_envoy("DELETE", "/items/1?force=true", h, {.port = 8080});
  REQUIRE(r.ok());
  CHECK(*r->method == "DELETE");
  CHECK(*r->path == "/items/1?force=true");
  CHECK(*r->host == "backend:8080");
  CHECK(*r->principal == "cluster.local/ns/default/sa/frontend");
  CHECK(*r->source_ip == "10.0.0.7");  // not X-Real-IP: Envoy does not set it
  CHECK(*r->port == 8080);
  CHECK(r->headers == std::vector<std::pair<std::string, std::string>>{
                          {"x-forwarded-for", "10.9.9.9,10.0.0.7"}, {"x-b3-traceid", "t"}});
  CHECK(*agent::map_envoy("GET", "", {}, {})->path == "/");
}

TEST_CASE("Envoy's http_service ignores X-Forwarded-Tls-Client-Cert, which only a client sends") {
  const auto ca = testing::make_ca("ca");
  const auto leaf = testing::issue(ca, "x", {"URI:spiffe://td/ns/default/sa/frontend"});
  const HeaderFields forged = {{"x-forwarded-tls-client-cert", leaf.certificate}};
  auto plaintext = agent::map_envoy("GET", "/", forged, {});
  REQUIRE(plaintext.ok());
  CHECK_FALSE(plaintext->principal.has_value());
  HeaderFields with_xfcc = forged;
  with_xfcc.emplace_back("x-forwarded-client-cert", "URI=spiffe://td/ns/other/sa/c");
  auto r = agent::map_envoy("GET", "/", with_xfcc, {});
  REQUIRE(r.ok());
  CHECK(*r->principal == "td/ns/other/sa/c");
  CHECK(r->headers.empty());
}

TEST_CASE("X-Forwarded-Tls-Client-Cert wins over XFCC, and IPv6 may come bracketed") {
  const auto ca = testing::make_ca("ca");
  const auto leaf = testing::issue(ca, "x", {"URI:spiffe://td/ns/a/sa/b"});
  const HeaderFields h = {{"X-Original-Method", "GET"},
                          {"X-Original-URI", "/"},
                          {"X-Forwarded-Tls-Client-Cert", leaf.certificate},
                          {"X-Forwarded-Client-Cert", "URI=spiffe://td/ns/other/sa/c"},
                          {"X-Real-IP", "[2001:db8::1]"}};
  auto r = agent::map_forward_auth(h, {});
  REQUIRE(r.ok());
  CHECK(*r->principal == "td/ns/a/sa/b");
  CHECK(*r->source_ip == "2001:db8::1");
}

#include "tollgate/agent/grpc_mapping.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <catch2/catch.hpp>

#include "support/check_requests.h"

using namespace tollgate;
using nlohmann::json;
using testing::mk_http_check;
using testing::mk_metadata;
using testing::mk_peer;

namespace {

eval::Request mapped(const testing::auth::CheckRequest& c,
                     const agent::CheckMappingOptions& o = {}) {
  auto r = agent::map_check_request(c, o);
  if (!r.ok()) FAIL("unexpected error: " << r.error().message);
  return std::move(r).value();
}

std::string error_of(const testing::auth::CheckRequest& c,
                     const agent::CheckMappingOptions& o = {}) {
  auto r = agent::map_check_request(c, o);
  if (r.ok()) FAIL("the request was read");
  return r.error().message;
}

std::string header(const eval::Request& r, const std::string& name) {
  for (const auto& [n, v] : r.headers) {
    if (n == name) return v;
  }
  return "(absent)";
}

constexpr const char* kJwt = "envoy.filters.http.jwt_authn";

}  // namespace

TEST_CASE("a CheckRequest without attributes is unreadable") {
  CHECK_THAT(error_of(testing::auth::CheckRequest()), Catch::Contains("attributes: missing"));
}

TEST_CASE("an HTTP check gives method, path, host, headers, addresses, port and SNI") {
  auto c = mk_http_check("GET", "/api/v1/data?x=1", "backend.default.svc:8080",
                         {{":authority", "backend.default.svc:8080"}, {"x-token", "abc"}});
  auto* a = c.mutable_attributes();
  mk_peer(*a->mutable_source(), "spiffe://cluster.local/ns/default/sa/frontend", "10.0.0.7", 51234);
  mk_peer(*a->mutable_destination(), "spiffe://cluster.local/ns/default/sa/backend", "10.0.0.9",
          8080);
  a->mutable_tls_session()->set_sni("outbound_.8080_._.backend.default.svc.cluster.local");
  const eval::Request r = mapped(c);
  CHECK_FALSE(r.tcp);
  CHECK(r.method == "GET");
  CHECK(r.path == "/api/v1/data?x=1");
  CHECK(r.host == "backend.default.svc:8080");
  CHECK(r.principal == "cluster.local/ns/default/sa/frontend");
  CHECK(r.source_ip == "10.0.0.7");
  CHECK(r.remote_ip == "10.0.0.7");
  CHECK(r.destination_ip == "10.0.0.9");
  CHECK(r.port == 8080);  // the destination's, not the source's
  CHECK(r.sni == "outbound_.8080_._.backend.default.svc.cluster.local");
  CHECK(header(r, "x-token") == "abc");
  CHECK(header(r, ":authority") == "backend.default.svc:8080");
  CHECK(r.jwt_claims.is_null());
  CHECK_FALSE(r.request_principal);
}

TEST_CASE("an absent path, host and SNI stay absent; an empty method is unreadable") {
  eval::Request r = mapped(mk_http_check("CONNECT", ""));
  CHECK_FALSE(r.path);
  CHECK_FALSE(r.host);
  CHECK_FALSE(r.sni);
  CHECK_FALSE(r.port);
  CHECK_FALSE(r.source_ip);
  CHECK_THAT(error_of(mk_http_check("", "/")), Catch::Contains("http.method: empty"));
}

TEST_CASE("only a SPIFFE principal is an identity: empty or anything else is a plaintext peer") {
  auto c = mk_http_check("GET", "/");
  auto* source = c.mutable_attributes()->mutable_source();
  source->set_principal("spiffe://td/ns/a/sa/b");
  CHECK(mapped(c).principal == "td/ns/a/sa/b");
  source->set_principal("");
  CHECK_FALSE(mapped(c).principal);
  source->set_principal("spiffe://");
  CHECK_FALSE(mapped(c).principal);
  source->set_principal("CN=client,O=example");  // a certificate without a URI SAN
  CHECK_FALSE(mapped(c).principal);
}

TEST_CASE("without request.http a check is a TCP request with no HTTP attributes") {
  auto c =
      testing::mk_tcp_check("spiffe://cluster.local/ns/db/sa/client", "10.1.0.4", "10.1.0.5", 5432);
  mk_metadata(c, kJwt, {{"payload", {{"iss", "i"}, {"sub", "s"}}}});
  eval::Request r = mapped(c);
  CHECK(r.tcp);
  CHECK(r.principal == "cluster.local/ns/db/sa/client");
  CHECK(r.port == 5432);
  CHECK(r.destination_ip == "10.1.0.5");
  CHECK_FALSE(r.method);
  CHECK(r.headers.empty());
  CHECK(r.jwt_claims.is_null());  // a JWT is HTTP-only
  CHECK_FALSE(r.request_principal);
  // A request without http is TCP too.
  c.mutable_attributes()->mutable_request();
  CHECK(mapped(c).tcp);
}

TEST_CASE("header names are lower-cased and repeated names joined with ',' as Envoy joins them") {
  auto c = mk_http_check("GET", "/", "", {{"X-Token", "a"}, {"accept", "text/html"}});
  auto* map = c.mutable_attributes()->mutable_request()->mutable_http()->mutable_header_map();
  auto* h = map->add_headers();
  h->set_key("x-token");
  h->set_raw_value("b");  // encode_raw_headers: raw_value, not value
  h = map->add_headers();
  h->set_key("x-other");
  h->set_value("c");
  const eval::Request r = mapped(c);
  CHECK(header(r, "x-token") == "a,b");
  CHECK(header(r, "accept") == "text/html");
  CHECK(header(r, "x-other") == "c");
  CHECK(r.headers.size() == 3);
}

TEST_CASE("many headers are merged the same way as a few") {
  std::vector<std::pair<std::string, std::string>> hs;
  for (int i = 0; i < 200; ++i) hs.emplace_back("h" + std::to_string(i % 100), std::to_string(i));
  hs.emplace_back("H7", "last");
  const eval::Request r = mapped(mk_http_check("GET", "/", "", hs));
  CHECK(r.headers.size() == 100);
  CHECK(header(r, "h7") == "7,107,last");
  CHECK(header(r, "h99") == "99,199");
}

TEST_CASE("more header entries than max_headers are unreadable") {
  std::vector<std::pair<std::string, std::string>> hs(11, {"x", "y"});
  agent::CheckMappingOptions o;
  o.max_headers = 10;
  CHECK_THAT(error_of(mk_http_check("GET", "/", "", hs), o),
             Catch::Contains("11 headers, more than the 10"));
  hs.pop_back();
  CHECK(mapped(mk_http_check("GET", "/", "", hs), o).headers.size() == 1);
}

TEST_CASE("header bytes that are not UTF-8 are kept as they are") {
  const std::string bytes = "caf\xe9\xff";
  const eval::Request r = mapped(mk_http_check("GET", "/", "", {{"x-latin1", bytes}}));
  CHECK(header(r, "x-latin1") == bytes);
}

TEST_CASE("the last X-Forwarded-For hop is remote.ip, and the peer address stays source.ip") {
  auto c = mk_http_check("GET", "/", "", {{"x-forwarded-for", "198.51.100.1, 203.0.113.9"}});
  mk_peer(*c.mutable_attributes()->mutable_source(), "", "10.0.0.7");
  eval::Request r = mapped(c);
  CHECK(r.source_ip == "10.0.0.7");
  CHECK(r.remote_ip == "203.0.113.9");
  c = mk_http_check("GET", "/", "", {{"x-forwarded-for", "2001:db8::5"}});
  CHECK(mapped(c).remote_ip == "2001:db8::5");
  CHECK_FALSE(mapped(c).source_ip);
  c = mk_http_check("GET", "/", "", {{"x-forwarded-for", "10.0.0.1, nonsense"}});
  CHECK_THAT(error_of(c), Catch::Contains("\"nonsense\" is not an IP address"));
}

TEST_CASE("an address that is not an IP, or a port above 65535, is unreadable and named") {
  auto c = mk_http_check("GET", "/");
  mk_peer(*c.mutable_attributes()->mutable_source(), "", "10.0.0.0/8");
  CHECK_THAT(error_of(c), Catch::Contains("attributes.source.address.socket_address.address: "
                                          "\"10.0.0.0/8\" is not an IP address"));
  c = mk_http_check("GET", "/");
  mk_peer(*c.mutable_attributes()->mutable_destination(), "", "host.example");
  CHECK_THAT(error_of(c), Catch::Contains("attributes.destination.address"));
  c = mk_http_check("GET", "/");
  mk_peer(*c.mutable_attributes()->mutable_destination(), "", "10.0.0.9", 65536);
  CHECK_THAT(error_of(c), Catch::Contains("65536 is not a port"));
  mk_peer(*c.mutable_attributes()->mutable_destination(), "", "10.0.0.9", 0);
  CHECK(mapped(c).port == 0);
}

TEST_CASE("the jwt_authn payload gives jwtClaims, and with string iss and sub requestPrincipal") {
  auto c = mk_http_check("GET", "/");
  const json payload = {{"iss", "https://issuer.example"},
                        {"sub", "team/alice"},
                        {"groups", {"admin", "dev"}},
                        {"exp", 1700000000},
                        {"ratio", 0.5},
                        {"email_verified", true}};
  mk_metadata(c, kJwt, {{"https://issuer.example", payload}});
  eval::Request r = mapped(c);
  CHECK(r.jwt_claims == payload);
  CHECK(r.jwt_claims["exp"].is_number_integer());
  CHECK(r.request_principal == "https://issuer.example/team/alice");
  CHECK_FALSE(eval::request_principal_conflict(r));

  mk_metadata(c, kJwt, {{"payload", {{"iss", "https://issuer.example"}}}});
  r = mapped(c);
  CHECK(r.jwt_claims == json{{"iss", "https://issuer.example"}});
  CHECK_FALSE(r.request_principal);  // the claims alone give what there is of it
  mk_metadata(c, kJwt, {{"payload", {{"iss", "i"}, {"sub", 7}}}});
  CHECK_FALSE(mapped(c).request_principal);
  mk_metadata(c, kJwt, {{"payload", json::object()}});
  CHECK(mapped(c).jwt_claims == json::object());  // a token without claims is still a token
}

TEST_CASE("without a payload key the namespace's one struct is the payload, and several refused") {
  auto c = mk_http_check("GET", "/");
  mk_metadata(c, kJwt, {{"note", "not a struct"}, {"issuer-a", {{"sub", "s"}}}});
  CHECK(mapped(c).jwt_claims == json{{"sub", "s"}});
  mk_metadata(c, kJwt, {{"note", "only scalars"}});
  CHECK(mapped(c).jwt_claims.is_null());
  mk_metadata(c, kJwt, {{"payload", {{"sub", "s"}}}, {"header", {{"alg", "RS256"}}}});
  CHECK_THAT(error_of(c),
             Catch::Contains("several struct values") && Catch::Contains("payload_in_metadata"));
}

TEST_CASE("a configured payload key picks its value; absent it is no token; not a struct refused") {
  agent::CheckMappingOptions o;
  o.jwt_payload_key = "payload";
  auto c = mk_http_check("GET", "/");
  mk_metadata(c, kJwt, {{"payload", {{"sub", "s"}}}, {"header", {{"alg", "RS256"}}}});
  CHECK(mapped(c, o).jwt_claims == json{{"sub", "s"}});
  mk_metadata(c, kJwt, {{"header", {{"alg", "RS256"}}}});
  CHECK(mapped(c, o).jwt_claims.is_null());
  mk_metadata(c, kJwt, {{"payload", "eyJ..."}});
  CHECK_THAT(error_of(c, o),
             Catch::Contains("[envoy.filters.http.jwt_authn][payload]: not a struct"));
}

TEST_CASE("a configured metadata namespace replaces jwt_authn's") {
  agent::CheckMappingOptions o;
  o.jwt_metadata_namespace = "example.jwt";
  auto c = mk_http_check("GET", "/");
  mk_metadata(c, kJwt, {{"payload", {{"sub", "ignored"}}}});
  mk_metadata(c, "example.jwt", {{"p", {{"iss", "i"}, {"sub", "s"}}}});
  eval::Request r = mapped(c, o);
  CHECK(r.request_principal == "i/s");
  CHECK(r.jwt_claims == json{{"iss", "i"}, {"sub", "s"}});
}

TEST_CASE("all metadata is dynamicMetadata, for experimental.envoy.filters conditions") {
  auto c = mk_http_check("GET", "/");
  mk_metadata(
      c, "envoy.filters.http.example",
      {{"tier", "gold"}, {"n", 3}, {"list", {"a", nullptr, false}}, {"nested", {{"k", "v"}}}});
  const eval::Request r = mapped(c);
  CHECK(r.dynamic_metadata == json{{"envoy.filters.http.example",
                                    {{"tier", "gold"},
                                     {"n", 3},
                                     {"list", {"a", nullptr, false}},
                                     {"nested", {{"k", "v"}}}}}});
}

TEST_CASE("metadata written as google.protobuf.Struct reads as protobuf's own JSON of it") {
  google::protobuf::Struct s;
  auto& f = *s.mutable_fields();
  f["iss"].set_string_value("https://issuer.example");
  f["exp"].set_number_value(1.5);
  f["ok"].set_bool_value(true);
  f["none"].set_null_value(google::protobuf::NULL_VALUE);
  auto* list = f["groups"].mutable_list_value();
  list->add_values()->set_string_value("admin");
  list->add_values()->mutable_struct_value();
  (*f["nested"].mutable_struct_value()->mutable_fields())["deep"].set_string_value("x");
  std::string expected;
  REQUIRE(google::protobuf::util::MessageToJsonString(s, &expected).ok());

  // The bytes of a google.protobuf.Struct parsed as the agent's wire Struct.
  auto c = mk_http_check("GET", "/");
  tollgate::wire::Struct wire;
  REQUIRE(wire.ParseFromString(s.SerializeAsString()));
  (*c.mutable_attributes()->mutable_metadata_context()->mutable_filter_metadata())["ns"] = wire;
  CHECK(mapped(c).dynamic_metadata["ns"] == json::parse(expected));
}

TEST_CASE("a self provider answers its own CUSTOM rules ALLOW; without one there is no answer") {
  auto c = mk_http_check("GET", "/");
  CHECK(mapped(c).ext_authz_by_provider.empty());
  CHECK_FALSE(mapped(c).ext_authz_default);
  agent::CheckMappingOptions o;
  o.self_provider = "tollgate";
  const eval::Request r = mapped(c, o);
  CHECK(r.ext_authz_by_provider == std::map<std::string, std::string>{{"tollgate", "ALLOW"}});
  CHECK_FALSE(r.ext_authz_default);  // other providers stay unanswered
}

#include "tollgate/policy/values.h"

#include <catch2/catch.hpp>

using namespace tollgate::policy;

TEST_CASE("ports are decimal 0-65535 and nothing else") {
  CHECK(*parse_port("0") == 0);
  CHECK(*parse_port("8080") == 8080);
  CHECK(*parse_port("65535") == 65535);
  CHECK_FALSE(parse_port("65536").ok());
  CHECK_FALSE(parse_port("abc").ok());
  CHECK_FALSE(parse_port("").ok());
  CHECK_FALSE(parse_port("-1").ok());
  CHECK_FALSE(parse_port("80 ").ok());
  CHECK(parse_port("http").error().message == "is not a port");
}

TEST_CASE("CIDRs accept IPv4, IPv6 and bare addresses and ignore host bits") {
  auto c = parse_cidr("10.1.2.3/8");
  REQUIRE(c.ok());
  CHECK(c->to_string() == "10.0.0.0/8");
  CHECK(c->contains(*parse_ip("10.200.0.1")));
  CHECK_FALSE(c->contains(*parse_ip("11.0.0.1")));
  CHECK(parse_cidr("192.168.0.7")->to_string() == "192.168.0.7/32");
  auto v6 = parse_cidr("2001:db8::1/32");
  REQUIRE(v6.ok());
  CHECK(v6->to_string() == "2001:db8::/32");
  CHECK(v6->contains(*parse_ip("2001:db8:ffff::5")));
  CHECK_FALSE(v6->contains(*parse_ip("10.0.0.1")));
  CHECK(parse_cidr("0.0.0.0/0")->contains(*parse_ip("203.0.113.9")));
  CHECK_FALSE(parse_cidr("10.0.0.0/33").ok());
  CHECK_FALSE(parse_cidr("10.0.0/8").ok());
  CHECK_FALSE(parse_cidr("10.0.0.0/").ok());
  CHECK_FALSE(parse_cidr("not-an-ip").ok());
}

TEST_CASE("an address is never in a range of the other IP family, as in Envoy's CidrRange") {
  const auto v4 = *parse_ip("10.1.2.3");
  const auto mapped = *parse_ip("::ffff:10.1.2.3");
  CHECK_FALSE(v4.v6());
  CHECK(mapped.v6());
  CHECK_FALSE(v4 == mapped);
  CHECK(v4.key() != mapped.key());
  CHECK_FALSE(parse_cidr("::/0")->contains(v4));
  CHECK(parse_cidr("::/0")->contains(mapped));
  CHECK_FALSE(parse_cidr("0.0.0.0/0")->contains(mapped));
  CHECK(parse_cidr("0.0.0.0/0")->contains(v4));
  CHECK_FALSE(parse_cidr("10.0.0.0/8")->contains(mapped));
  CHECK_FALSE(parse_cidr("::ffff:0:0/96")->contains(v4));
  CHECK(parse_cidr("::ffff:0:0/96")->contains(mapped));
  CHECK_FALSE(parse_cidr("::ffff:10.1.2.3")->contains(v4));
  CHECK_FALSE(parse_cidr("10.1.2.3")->contains(mapped));
}

TEST_CASE("a CIDR keeps its family in its canonical text and its prefix in that family's bits") {
  CHECK(parse_cidr("::ffff:10.1.2.3/104")->to_string() == "::ffff:10.0.0.0/104");
  CHECK(parse_cidr("::ffff:10.1.2.3")->to_string() == "::ffff:10.1.2.3/128");
  CHECK(parse_cidr("::/0")->to_string() == "::/0");
  CHECK(parse_cidr("0.0.0.0/0")->to_string() == "0.0.0.0/0");
  CHECK(parse_cidr("10.1.2.3")->prefix == 32);
  CHECK(parse_cidr("2001:db8::1")->prefix == 128);
  CHECK(parse_cidr("::/129").error().message == "has an IPv6 prefix length over 128");
  CHECK(parse_cidr("1.2.3.4/33").error().message == "has an IPv4 prefix length over 32");
  CHECK(parse_cidr("2001:db8::/128")->contains(*parse_ip("2001:db8::")));
  CHECK_FALSE(parse_cidr("2001:db8::/128")->contains(*parse_ip("2001:db8::1")));
  CHECK(parse_cidr("192.168.1.0/23")->contains(*parse_ip("192.168.0.255")));
  CHECK_FALSE(parse_cidr("192.168.1.0/24")->contains(*parse_ip("192.168.0.255")));
}

TEST_CASE("path templates follow Istio's validation rules") {
  CHECK(contains_path_template("/a/{*}/b"));
  CHECK(contains_path_template("/a/{**}"));
  CHECK_FALSE(contains_path_template("/a/*"));
  CHECK(validate_path_template("/a/{*}/b/{**}").ok());
  CHECK(validate_path_template("/store/{**}/cart").ok());
  CHECK_FALSE(validate_path_template("/a/{**}/b/{*}").ok());  // {**} must be last
  CHECK_FALSE(validate_path_template("/a/x{*}").ok());        // operator is a whole segment
  CHECK_FALSE(validate_path_template("/a/*/{*}").ok());
  CHECK_FALSE(validate_path_template("a/{*}").ok());
}

TEST_CASE("when keys map to attributes, and unknown or removed keys are rejected") {
  CHECK(parse_when_key("source.ip")->attr == Attr::kSourceIp);
  CHECK(parse_when_key("destination.port")->attr == Attr::kPort);
  auto h = parse_when_key("request.headers[X-Token]");
  REQUIRE(h.ok());
  CHECK(h->attr == Attr::kHeader);
  CHECK(h->arg == "x-token");
  auto c = parse_when_key("request.auth.claims[nested][key1]");
  REQUIRE(c.ok());
  CHECK(c->attr == Attr::kClaim);
  CHECK(c->arg == std::string("nested\0key1", 11));
  auto m = parse_when_key("experimental.envoy.filters.a.b[c]");
  REQUIRE(m.ok());
  CHECK(m->arg == std::string("envoy.filters.a.b\0c", 19));
  CHECK(parse_when_key("request.headers[]")->malformed == "has a malformed header name");
  CHECK_FALSE(parse_when_key("request.headers[x]")->malformed.has_value());
  CHECK_FALSE(parse_when_key("destination.labels").ok());
  CHECK_FALSE(parse_when_key("request.foo").ok());
  CHECK_FALSE(parse_when_key("source.ip ").ok());
}

TEST_CASE("service account values are name or namespace/name without wildcards") {
  CHECK(check_value(Attr::kSourceServiceAccount, "sleep").ok());
  CHECK(check_value(Attr::kSourceServiceAccount, "foo/sleep").ok());
  CHECK_FALSE(check_value(Attr::kSourceServiceAccount, "foo/*").ok());
  CHECK_FALSE(check_value(Attr::kSourceServiceAccount, "a/b/c").ok());
  CHECK_FALSE(check_value(Attr::kSourceServiceAccount, "/x").ok());
}

TEST_CASE("the dry-run annotation is parsed like Go's strconv.ParseBool") {
  for (const char* t : {"1", "t", "T", "true", "True", "TRUE"}) CHECK(*parse_go_bool(t));
  for (const char* f : {"0", "f", "F", "false", "False", "FALSE"}) CHECK_FALSE(*parse_go_bool(f));
  CHECK_FALSE(parse_go_bool("yes").has_value());
  CHECK_FALSE(parse_go_bool("tRuE").has_value());
}

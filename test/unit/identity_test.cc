#include "tollgate/agent/identity.h"

#include <catch2/catch.hpp>
#include <functional>
#include <string_view>

#include "support/certs.h"
#include "tollgate/util/base64.h"

using namespace tollgate;

namespace {

// nginx's $ssl_client_escaped_cert: the PEM with every reserved character %-escaped.
std::string url_escape(const std::string& s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out += {'%', kHex[c >> 4], kHex[c & 15]};
    }
  }
  return out;
}

struct Certs {
  testing::Pem ca = testing::make_ca("test CA");
  testing::Pem frontend = testing::issue(
      ca, "frontend",
      {"DNS:frontend.default", "URI:https://not-spiffe.example/x",
       "URI:spiffe://cluster.local/ns/default/sa/frontend", "URI:spiffe://other/ns/x/sa/y"});
  testing::Pem plain = testing::issue(ca, "no-spiffe", {"DNS:plain.example"});
};

const Certs& certs() {
  static const Certs c;
  return c;
}

}  // namespace

TEST_CASE("the principal is the first spiffe URI SAN, in every encoding proxies use") {
  const auto& pem = certs().frontend.certificate;
  const std::string der = testing::der_of(pem);
  const std::string b64 = util::encode_base64(der);
  for (const std::string& header :
       {pem, url_escape(pem), b64, url_escape(b64),
        b64 + "," + util::encode_base64(testing::der_of(certs().ca.certificate))}) {
    INFO(header.substr(0, 40));
    auto p = agent::principal_from_client_cert(header);
    REQUIRE(p.ok());
    REQUIRE(p->has_value());
    CHECK(**p == "cluster.local/ns/default/sa/frontend");
  }
}

TEST_CASE("a certificate without a SPIFFE id, or no certificate, gives no principal") {
  auto p = agent::principal_from_client_cert(certs().plain.certificate);
  REQUIRE(p.ok());
  CHECK_FALSE(p->has_value());
  p = agent::principal_from_client_cert("  ");
  REQUIRE(p.ok());
  CHECK_FALSE(p->has_value());
}

TEST_CASE("a certificate header that holds no certificate is an error, never an identity") {
  for (const char* bad : {"garbage", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
                          "%ZZ", "Zm9vYmFy", "!!!!"}) {
    INFO(bad);
    CHECK_FALSE(agent::principal_from_client_cert(bad).ok());
  }
  // Trailing bytes after a DER certificate are refused too.
  const std::string der = testing::der_of(certs().frontend.certificate) + "x";
  CHECK_FALSE(agent::principal_from_client_cert(util::encode_base64(der)).ok());
}

TEST_CASE("a certificate read again, or another one in the same memo slot, gives its own answer") {
  const std::string frontend = url_escape(certs().frontend.certificate);
  const auto other_ca = testing::make_ca("other CA");
  const auto other = testing::issue(other_ca, "api", {"URI:spiffe://cluster.local/ns/prod/sa/api"});
  // Trailing spaces do not change the certificate, only the memo's key: find a value of the
  // other certificate that falls in frontend's slot (the memo has 64).
  const auto slot = [](const std::string& v) { return std::hash<std::string_view>{}(v) % 64; };
  std::string colliding = other.certificate;
  while (slot(colliding) != slot(frontend)) colliding += ' ';
  for (int i = 0; i < 3; ++i) {
    auto a = agent::principal_from_client_cert(frontend);
    auto b = agent::principal_from_client_cert(colliding);
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    CHECK(**a == "cluster.local/ns/default/sa/frontend");
    CHECK(**b == "cluster.local/ns/prod/sa/api");
    CHECK_FALSE(agent::principal_from_client_cert(frontend.substr(0, 200)).ok());
  }
}

TEST_CASE("XFCC: the last element decides; a client's own elements before it are ignored") {
  auto p = agent::principal_from_xfcc(
      "By=spiffe://cluster.local/ns/default/sa/backend;URI=spiffe://cluster.local/ns/evil/sa/x,"
      "By=spiffe://cluster.local/ns/default/sa/backend;Hash=abc;"
      "Subject=\"CN=a,O=b;c\";URI=spiffe://cluster.local/ns/default/sa/frontend");
  REQUIRE(p.ok());
  REQUIRE(p->has_value());
  CHECK(**p == "cluster.local/ns/default/sa/frontend");
  p = agent::principal_from_xfcc("URI=spiffe://a/ns/b/sa/c,Hash=1234");
  REQUIRE(p.ok());
  CHECK_FALSE(p->has_value());  // the verified hop had no URI
  p = agent::principal_from_xfcc("Hash=1;URI=https://x;URI=spiffe://td/ns/n/sa/s");
  REQUIRE(p.ok());
  CHECK(**p == "td/ns/n/sa/s");
  p = agent::principal_from_xfcc("Subject=\"CN=a\\\",URI=spiffe://x/ns/y/sa/z\";Hash=1");
  REQUIRE(p.ok());
  CHECK_FALSE(p->has_value());  // the URI is inside a quoted subject
  CHECK_FALSE(agent::principal_from_xfcc("Subject=\"unterminated").ok());
}

TEST_CASE("url_unescape decodes %XX and refuses malformed escapes") {
  CHECK(*agent::url_unescape("a%20b%2Fc+d") == "a b/c+d");
  CHECK_FALSE(agent::url_unescape("a%2").ok());
  CHECK_FALSE(agent::url_unescape("a%G0").ok());
}

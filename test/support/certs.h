// Test certificates: a CA and leaf certificates it signs, with the SANs a test needs (SPIFFE
// URIs for workload identities, DNS names and IPs for servers). EC P-256, valid for a week.
#pragma once

#include <string>
#include <vector>

namespace tollgate::testing {

struct Pem {
  std::string certificate;  // PEM
  std::string private_key;  // PEM
};

// A self-signed CA.
Pem make_ca(const std::string& common_name);

// A self-signed certificate usable both as a CA and as a server or client certificate, for
// 127.0.0.1 and localhost (subjectAltName); e.g. a test server's certificate that its clients
// trust as their CA.
Pem make_self_signed(const std::string& common_name);

// A certificate signed by `ca` (server and client auth) with these subjectAltName entries in
// OpenSSL's syntax, e.g. {"URI:spiffe://cluster.local/ns/default/sa/frontend",
// "DNS:localhost", "IP:127.0.0.1"}.
Pem issue(const Pem& ca, const std::string& common_name, const std::vector<std::string>& sans);

// The DER bytes of a PEM certificate.
std::string der_of(const std::string& certificate_pem);

}  // namespace tollgate::testing

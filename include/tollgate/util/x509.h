// X.509 helpers over OpenSSL, for the identities tollgate reads from certificates: a client
// certificate on the controller's TLS listener, one a proxy forwards to the agent.
#pragma once

#include <optional>
#include <string>

using X509 = struct x509_st;  // OpenSSL's, without its headers

namespace tollgate::util {

// The first spiffe:// URI SAN of `cert`, without "spiffe://" (as Istio writes principals);
// nullopt when it has none, or `cert` is null.
std::optional<std::string> spiffe_principal(X509* cert);

}  // namespace tollgate::util

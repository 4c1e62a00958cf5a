// The peer identity a proxy forwards to the agent (docs/agent.md#peer-identity): the client
// certificate it verified (X-Forwarded-Tls-Client-Cert) or Envoy's X-Forwarded-Client-Cert.
// Pure functions; thread-safe. OpenSSL parses the certificates; each thread remembers the
// principals of the last certificates it parsed (a client sends the same one every time).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "tollgate/util/result.h"

namespace tollgate::agent {

// The principal (the first spiffe:// URI SAN, without "spiffe://") of the certificate in
// `value`: PEM, URL-escaped or not (nginx's $ssl_client_escaped_cert), or base64 DER,
// URL-escaped or not (Caddy, Traefik). Several certificates (a chain, comma-separated) give
// the first one's. nullopt: an empty value (a proxy writes its empty placeholder when the
// client sent no certificate) or a certificate without a SPIFFE id. An error: `value` holds
// no certificate OpenSSL can read.
util::Result<std::optional<std::string>> principal_from_client_cert(std::string_view value);

// The principal in the last element of an X-Forwarded-Client-Cert value (Envoy appends the
// element of the hop it verified; earlier ones come from the client and are ignored): its
// first URI=spiffe://... pair. nullopt: no URI in that element. An error: the value cannot be
// parsed (an unterminated quote).
util::Result<std::optional<std::string>> principal_from_xfcc(std::string_view value);

// %XX decoding ('+' is kept); an error for a malformed escape.
util::Result<std::string> url_unescape(std::string_view s);

}  // namespace tollgate::agent

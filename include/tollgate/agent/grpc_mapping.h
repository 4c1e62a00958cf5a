// Envoy's gRPC ext_authz CheckRequest turned into the request shape the engine decides
// (docs/agent.md#grpc-ext_authz): peer identity, addresses, the HTTP request, and the payload
// Envoy's jwt_authn filter left in dynamic metadata. A CheckRequest without an HTTP request
// (Envoy's network ext_authz filter) is a TCP request. Pure functions; thread-safe.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "tollgate/eval/request.h"
#include "tollgate/util/result.h"

namespace envoy::service::auth::v3 {
class CheckRequest;
}

namespace tollgate::agent {

// The dynamic-metadata namespace Envoy's jwt_authn filter writes the payload under.
inline constexpr std::string_view kJwtAuthnNamespace = "envoy.filters.http.jwt_authn";

struct CheckMappingOptions {
  // The namespace of metadata_context.filter_metadata that holds the validated JWT payload
  // (`--jwt-metadata-key`). Envoy only sends it when the ext_authz filter lists it in
  // metadata_context_namespaces.
  std::string jwt_metadata_namespace{kJwtAuthnNamespace};
  // The key under that namespace: the jwt_authn provider's payload_in_metadata. Empty: the
  // namespace's one struct value, whatever its key (a request with several is refused, since
  // it cannot be told which is the payload).
  std::string jwt_payload_key;
  // A request with more header entries than this is refused. Envoy sends at most its
  // max_headers_count (100 by default).
  std::size_t max_headers = 1024;
  // The name of the mesh's extension provider that routes to this agent, when an Istio CUSTOM
  // policy does (`--grpc-provider-name`). The table's CUSTOM rules for that provider are then
  // the question being asked: the request carries the provider's answer as ALLOW, so the
  // table's DENY and ALLOW policies decide it. Empty: no answer for any provider, and a
  // CUSTOM rule that matches denies (fail closed).
  std::string self_provider;
};

// The request `check` describes. An error names what cannot be read ("attributes.source.
// address.socket_address.address: \"x\" is not an IP address"): the caller refuses the
// request with it (Authorizer::refuse), denying it.
util::Result<eval::Request> map_check_request(const envoy::service::auth::v3::CheckRequest& check,
                                              const CheckMappingOptions& options);

}  // namespace tollgate::agent

// What the proxy asks the agent, turned into the request shape the engine decides
// (docs/agent.md#endpoints): nginx auth_request, Caddy forward_auth and Traefik forwardAuth
// call /v1/authz with the original request in X-Original-* / X-Forwarded-* headers; Envoy's
// ext_authz http_service calls /v1/authz/envoy/<original path> with the original method and
// headers. Pure functions; thread-safe.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tollgate/eval/request.h"
#include "tollgate/util/result.h"

namespace tollgate::agent {

// A request's header fields as received: names in any case, repeated names kept in order.
using HeaderFields = std::vector<std::pair<std::string, std::string>>;

struct MappingOptions {
  std::optional<int> port;  // --port: the workload port when the proxy sends none
};

// /v1/authz. An error means the request cannot be read (no method or path header, a bad
// address, port or certificate): the caller denies it with that reason.
util::Result<eval::Request> map_forward_auth(const HeaderFields& headers,
                                             const MappingOptions& options);

// /v1/authz/envoy<path>: `method` and `path` (path and query after the prefix) are the
// original request's own; the rest comes from `headers`. The peer's identity is XFCC's last
// element only: X-Forwarded-Tls-Client-Cert and X-Real-IP, which Envoy never sets, are not
// read (a client could have sent them).
util::Result<eval::Request> map_envoy(std::string_view method, std::string_view path,
                                      const HeaderFields& headers, const MappingOptions& options);

}  // namespace tollgate::agent

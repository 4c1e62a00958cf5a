#include "tollgate/agent/authz_request.h"

#include <algorithm>
#include <array>

#include "tollgate/agent/identity.h"
#include "tollgate/policy/values.h"
#include "tollgate/util/strings.h"

namespace tollgate::agent {
namespace {

// Headers that carry the proxy's description of the request to the agent, or belong to the
// hop between proxy and agent: they are not the original request's headers.
constexpr std::array<std::string_view, 15> kProtocolHeaders = {"x-original-method",
                                                               "x-original-uri",
                                                               "x-forwarded-method",
                                                               "x-forwarded-uri",
                                                               "x-forwarded-host",
                                                               "x-forwarded-port",
                                                               "x-real-ip",
                                                               "x-forwarded-tls-client-cert",
                                                               "x-forwarded-client-cert",
                                                               "host",
                                                               "connection",
                                                               "content-length",
                                                               "transfer-encoding",
                                                               "keep-alive",
                                                               "te"};

// The headers with lower-case names, repeated names joined with ',' as Envoy joins them.
HeaderFields normalized(const HeaderFields& headers) {
  HeaderFields out;
  for (const auto& [name, value] : headers) {
    std::string lower = util::lowered(name);
    auto it = std::find_if(out.begin(), out.end(), [&](const auto& h) { return h.first == lower; });
    if (it == out.end()) {
      out.emplace_back(std::move(lower), value);
    } else {
      it->second.append(",").append(value);
    }
  }
  return out;
}

const std::string* find(const HeaderFields& h, std::string_view lower_name) {
  for (const auto& [n, v] : h) {
    if (n == lower_name) return &v;
  }
  return nullptr;
}

const std::string* first_of(const HeaderFields& h, std::string_view a, std::string_view b) {
  const std::string* v = find(h, a);
  return v != nullptr ? v : find(h, b);
}

util::Result<std::string> address(std::string_view text, const char* header) {
  std::string ip(util::trim(text));
  // "[::1]" as some proxies write IPv6 in headers.
  if (ip.size() > 2 && ip.front() == '[' && ip.back() == ']') ip = ip.substr(1, ip.size() - 2);
  if (!policy::parse_ip(ip)) {
    return util::make_error(std::string(header) + ": \"" + std::string(text) +
                            "\" is not an IP address");
  }
  return ip;
}

// The source address: X-Real-IP when `real_ip` allows it, else the last X-Forwarded-For hop
// (the one the proxy in front of the agent appended).
util::Result<std::optional<std::string>> source_ip(const HeaderFields& h, bool real_ip) {
  if (const std::string* v = real_ip ? find(h, "x-real-ip") : nullptr) {
    TOLLGATE_TRY(ip, address(*v, "X-Real-IP"));
    return std::optional(ip);
  }
  if (const std::string* v = find(h, "x-forwarded-for")) {
    const auto hops = util::split(*v, ',');
    TOLLGATE_TRY(ip, address(hops.back(), "X-Forwarded-For (last hop)"));
    return std::optional(ip);
  }
  return std::optional<std::string>();
}

// X-Forwarded-Tls-Client-Cert only when `client_cert` allows it (forward auth): Envoy never
// sets it, so on Envoy's endpoint it could only be the client's own (Envoy's http_service
// passes client headers on), and the identity is XFCC's last element, which Envoy appends.
util::Result<std::optional<std::string>> principal(const HeaderFields& h, bool client_cert) {
  if (const std::string* v = client_cert ? find(h, "x-forwarded-tls-client-cert") : nullptr) {
    auto p = principal_from_client_cert(*v);
    if (!p.ok()) return util::make_error("X-Forwarded-Tls-Client-Cert: " + p.error().message);
    return p;
  }
  if (const std::string* v = find(h, "x-forwarded-client-cert")) {
    auto p = principal_from_xfcc(*v);
    if (!p.ok()) return util::make_error("X-Forwarded-Client-Cert: " + p.error().message);
    return p;
  }
  return std::optional<std::string>();
}

util::Result<std::optional<int>> port(const HeaderFields& h, const MappingOptions& o) {
  const std::string* v = find(h, "x-forwarded-port");
  if (v == nullptr) return o.port;
  auto p = policy::parse_port(util::trim(*v));
  if (!p.ok()) {
    return util::make_error("X-Forwarded-Port: \"" + *v + "\" " + p.error().message);
  }
  return std::optional(*p);
}

// What both endpoints share: identity, source, port, and the original headers.
// `forward_auth`: the headers only a forward-auth proxy sets (X-Real-IP,
// X-Forwarded-Tls-Client-Cert) are read; on Envoy's endpoint they can only be a client's.
util::Status fill_common(const HeaderFields& h, const MappingOptions& o, bool forward_auth,
                         eval::Request& r) {
  TOLLGATE_TRY(peer, principal(h, forward_auth));
  TOLLGATE_TRY(ip, source_ip(h, forward_auth));
  TOLLGATE_TRY(p, port(h, o));
  r.principal = std::move(peer);
  r.source_ip = ip;
  r.remote_ip = ip;
  r.port = p;
  for (const auto& [name, value] : h) {
    const bool protocol =
        std::find(kProtocolHeaders.begin(), kProtocolHeaders.end(), name) != kProtocolHeaders.end();
    if (!protocol) r.headers.emplace_back(name, value);
  }
  return util::ok();
}

}  // namespace

util::Result<eval::Request> map_forward_auth(const HeaderFields& headers,
                                             const MappingOptions& options) {
  const HeaderFields h = normalized(headers);
  const std::string* method = first_of(h, "x-original-method", "x-forwarded-method");
  const std::string* uri = first_of(h, "x-original-uri", "x-forwarded-uri");
  if (method == nullptr || util::trim(*method).empty()) {
    return util::make_error("no X-Original-Method or X-Forwarded-Method header");
  }
  if (uri == nullptr || util::trim(*uri).empty()) {
    return util::make_error("no X-Original-URI or X-Forwarded-Uri header");
  }
  eval::Request r;
  r.method = std::string(util::trim(*method));
  r.path = std::string(util::trim(*uri));
  const std::string* host = first_of(h, "x-forwarded-host", "host");
  if (host != nullptr) r.host = std::string(util::trim(*host));
  TOLLGATE_TRY_STATUS(fill_common(h, options, true, r));
  return r;
}

util::Result<eval::Request> map_envoy(std::string_view method, std::string_view path,
                                      const HeaderFields& headers, const MappingOptions& options) {
  const HeaderFields h = normalized(headers);
  if (method.empty()) return util::make_error("no method");
  eval::Request r;
  r.method = std::string(method);
  r.path = path.empty() ? std::string("/") : std::string(path);
  if (const std::string* host = find(h, "host")) r.host = std::string(util::trim(*host));
  TOLLGATE_TRY_STATUS(fill_common(h, options, false, r));
  return r;
}

}  // namespace tollgate::agent

#include "tollgate/agent/grpc_mapping.h"

#include <cmath>
#include <cstdint>
#include <unordered_map>
#include <utility>
#include <vector>

#include "envoy/service/auth/v3/external_auth.pb.h"
#include "tollgate/policy/values.h"
#include "tollgate/util/strings.h"

namespace tollgate::agent {
namespace {

namespace auth = envoy::service::auth::v3;
namespace core = envoy::config::core::v3;
using nlohmann::json;

constexpr std::string_view kSpiffe = "spiffe://";

json to_json(const tollgate::wire::Struct& s);

json to_json(const tollgate::wire::Value& v) {
  switch (v.kind_case()) {
    case tollgate::wire::Value::kNumberValue: {
      // Struct numbers are doubles; whole ones read back as integers (claims such as exp).
      const double d = v.number_value();
      if (std::isfinite(d) && std::trunc(d) == d && std::fabs(d) < 9007199254740992.0) {
        return static_cast<std::int64_t>(d);
      }
      return d;
    }
    case tollgate::wire::Value::kStringValue:
      return v.string_value();
    case tollgate::wire::Value::kBoolValue:
      return v.bool_value();
    case tollgate::wire::Value::kStructValue:
      return to_json(v.struct_value());
    case tollgate::wire::Value::kListValue: {
      json a = json::array();
      for (const auto& e : v.list_value().values()) a.push_back(to_json(e));
      return a;
    }
    case tollgate::wire::Value::kNullValue:
    case tollgate::wire::Value::KIND_NOT_SET:
      break;
  }
  return nullptr;
}

// A repeated key keeps its last value, as a protobuf map does.
json to_json(const tollgate::wire::Struct& s) {
  json o = json::object();
  for (const auto& f : s.fields()) o[f.key()] = to_json(f.value());
  return o;
}

// The peer's principal as Istio writes it: its SPIFFE id without "spiffe://". Envoy sends
// the certificate's URI SAN, else a DNS SAN, else its subject; only a SPIFFE id is an identity
// (as for the HTTP endpoints, docs/agent.md#peer-identity), anything else is a plaintext peer.
std::optional<std::string> principal(const auth::AttributeContext::Peer& peer) {
  const std::string& p = peer.principal();
  if (p.size() > kSpiffe.size() && p.starts_with(kSpiffe)) return p.substr(kSpiffe.size());
  return std::nullopt;
}

util::Result<std::optional<std::string>> ip(const auth::AttributeContext::Peer& peer,
                                            const char* where) {
  if (!peer.has_address() || !peer.address().has_socket_address()) {
    return std::optional<std::string>();  // a pipe or an internal address: no IP
  }
  const std::string& text = peer.address().socket_address().address();
  if (text.empty()) return std::optional<std::string>();
  if (!policy::parse_ip(text)) {
    return util::make_error(std::string(where) + ".address.socket_address.address: \"" + text +
                            "\" is not an IP address");
  }
  return std::optional(text);
}

// Adds one header to `r.headers`, names lower-cased and repeated names joined with ',' as
// Envoy joins them. `index` finds names once there are many.
class HeaderMerger {
 public:
  explicit HeaderMerger(std::vector<std::pair<std::string, std::string>>& out) : out_(out) {}

  void add(std::string_view name, std::string_view value) {
    std::string lower = util::lowered(name);
    if (std::string* existing = find(lower)) {
      existing->push_back(',');
      existing->append(value);
      return;
    }
    out_.emplace_back(std::move(lower), std::string(value));
    if (out_.size() > kLinear) {
      if (index_.empty()) {
        for (std::size_t i = 0; i < out_.size(); ++i) index_.emplace(out_[i].first, i);
      } else {
        index_.emplace(out_.back().first, out_.size() - 1);
      }
    }
  }

 private:
  static constexpr std::size_t kLinear = 32;

  std::string* find(const std::string& lower) {
    if (out_.size() > kLinear) {
      auto it = index_.find(lower);
      return it == index_.end() ? nullptr : &out_[it->second].second;
    }
    for (auto& [n, v] : out_) {
      if (n == lower) return &v;
    }
    return nullptr;
  }

  std::vector<std::pair<std::string, std::string>>& out_;
  std::unordered_map<std::string, std::size_t> index_;
};

util::Status map_http(const auth::AttributeContext::HttpRequest& http, const CheckMappingOptions& o,
                      eval::Request& r) {
  if (http.method().empty()) return util::make_error("attributes.request.http.method: empty");
  r.method = http.method();
  if (!http.path().empty()) r.path = http.path();
  if (!http.host().empty()) r.host = http.host();
  const std::size_t n = static_cast<std::size_t>(http.headers_size()) +
                        static_cast<std::size_t>(http.header_map().headers_size());
  if (n > o.max_headers) {
    return util::make_error("attributes.request.http: " + std::to_string(n) +
                            " headers, more than the " + std::to_string(o.max_headers) +
                            " accepted");
  }
  r.headers.reserve(n);
  HeaderMerger merger(r.headers);
  for (const auto& h : http.headers()) merger.add(h.key(), h.value());
  for (const auto& h : http.header_map().headers()) {
    merger.add(h.key(), h.raw_value().empty() ? h.value() : h.raw_value());
  }
  // The original client: the last X-Forwarded-For hop, as Envoy takes it by default
  // (xff_num_trusted_hops 0) for remote.ip; else the peer.
  for (const auto& [name, value] : r.headers) {
    if (name != "x-forwarded-for") continue;
    const std::string_view v = value;
    const std::size_t comma = v.rfind(',');
    const std::string_view last =
        util::trim(comma == std::string_view::npos ? v : v.substr(comma + 1));
    if (last.empty()) break;
    if (!policy::parse_ip(last)) {
      return util::make_error("attributes.request.http.headers[x-forwarded-for]: the last hop \"" +
                              std::string(last) + "\" is not an IP address");
    }
    r.remote_ip = std::string(last);
    break;
  }
  return util::ok();
}

// The validated JWT's payload: metadata_context.filter_metadata[namespace][key].
util::Status map_jwt(const auth::AttributeContext& a, const CheckMappingOptions& o,
                     eval::Request& r) {
  const auto& filters = a.metadata_context().filter_metadata();
  auto ns = filters.find(o.jwt_metadata_namespace);
  if (ns == filters.end()) return util::ok();  // no token
  const std::string where =
      "attributes.metadata_context.filter_metadata[" + o.jwt_metadata_namespace + "]";
  const tollgate::wire::Struct* payload = nullptr;
  for (const auto& f : ns->second.fields()) {
    if (!o.jwt_payload_key.empty()) {
      if (f.key() != o.jwt_payload_key) continue;
      if (f.value().kind_case() != tollgate::wire::Value::kStructValue) {
        return util::make_error(where + "[" + o.jwt_payload_key + "]: not a struct");
      }
      payload = &f.value().struct_value();  // the last one, as a map keeps it
    } else if (f.value().kind_case() == tollgate::wire::Value::kStructValue) {
      if (payload != nullptr) {
        return util::make_error(where +
                                ": several struct values, so which is the JWT payload is "
                                "unknown; configure the payload key (payload_in_metadata)");
      }
      payload = &f.value().struct_value();
    }
  }
  if (payload == nullptr) return util::ok();
  r.jwt_claims = to_json(*payload);
  auto iss = r.jwt_claims.find("iss");
  auto sub = r.jwt_claims.find("sub");
  if (iss != r.jwt_claims.end() && sub != r.jwt_claims.end() && iss->is_string() &&
      sub->is_string()) {
    // The token's principal; it agrees with the claims by construction.
    r.request_principal = iss->get<std::string>() + "/" + sub->get<std::string>();
  }
  return util::ok();
}

}  // namespace

util::Result<eval::Request> map_check_request(const auth::CheckRequest& check,
                                              const CheckMappingOptions& o) {
  if (!check.has_attributes()) return util::make_error("CheckRequest.attributes: missing");
  const auth::AttributeContext& a = check.attributes();
  eval::Request r;
  r.tcp = !(a.has_request() && a.request().has_http());
  r.principal = principal(a.source());
  TOLLGATE_TRY(source_ip, ip(a.source(), "attributes.source"));
  r.source_ip = source_ip;
  r.remote_ip = source_ip;
  TOLLGATE_TRY(destination_ip, ip(a.destination(), "attributes.destination"));
  r.destination_ip = std::move(destination_ip);
  if (a.destination().address().socket_address().port_specifier_case() ==
      core::SocketAddress::kPortValue) {
    const std::uint32_t port = a.destination().address().socket_address().port_value();
    if (port > 65535) {
      return util::make_error("attributes.destination.address.socket_address.port_value: " +
                              std::to_string(port) + " is not a port");
    }
    r.port = static_cast<int>(port);
  }
  if (!a.tls_session().sni().empty()) r.sni = a.tls_session().sni();
  if (a.has_metadata_context() && !a.metadata_context().filter_metadata().empty()) {
    r.dynamic_metadata = json::object();
    for (const auto& [name, values] : a.metadata_context().filter_metadata()) {
      r.dynamic_metadata[name] = to_json(values);
    }
  }
  if (!o.self_provider.empty()) r.ext_authz_by_provider.emplace(o.self_provider, "ALLOW");
  if (!r.tcp) {
    TOLLGATE_TRY_STATUS(map_http(a.request().http(), o, r));
    TOLLGATE_TRY_STATUS(map_jwt(a, o, r));
  }
  return r;
}

}  // namespace tollgate::agent

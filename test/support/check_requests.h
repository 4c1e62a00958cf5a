// Builders of Envoy ext_authz CheckRequests for tests: peers, HTTP requests, metadata from
// JSON (mk_* helpers over the generated protobuf types).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "envoy/service/auth/v3/external_auth.pb.h"

namespace tollgate::testing {

namespace auth = envoy::service::auth::v3;

inline tollgate::wire::Struct mk_struct(const nlohmann::json& object);

inline tollgate::wire::Value mk_value(const nlohmann::json& j) {
  tollgate::wire::Value v;
  if (j.is_null()) {
    v.set_null_value(0);
  } else if (j.is_boolean()) {
    v.set_bool_value(j.get<bool>());
  } else if (j.is_number()) {
    v.set_number_value(j.get<double>());
  } else if (j.is_string()) {
    v.set_string_value(j.get<std::string>());
  } else if (j.is_array()) {
    for (const auto& e : j) *v.mutable_list_value()->add_values() = mk_value(e);
  } else {
    *v.mutable_struct_value() = mk_struct(j);
  }
  return v;
}

inline tollgate::wire::Struct mk_struct(const nlohmann::json& object) {
  tollgate::wire::Struct s;
  for (const auto& [k, v] : object.items()) {
    auto* f = s.add_fields();
    f->set_key(k);
    *f->mutable_value() = mk_value(v);
  }
  return s;
}

// Fills a peer: principal as Envoy sends it ("spiffe://..."; "" for none), address, port.
inline void mk_peer(auth::AttributeContext::Peer& peer, const std::string& principal,
                    const std::string& ip, std::optional<std::uint32_t> port = std::nullopt) {
  if (!principal.empty()) peer.set_principal(principal);
  if (!ip.empty()) peer.mutable_address()->mutable_socket_address()->set_address(ip);
  if (port) peer.mutable_address()->mutable_socket_address()->set_port_value(*port);
}

// An HTTP check as Envoy's HTTP ext_authz filter sends it.
inline auth::CheckRequest mk_http_check(
    const std::string& method, const std::string& path, const std::string& host = "",
    const std::vector<std::pair<std::string, std::string>>& headers = {}) {
  auth::CheckRequest c;
  auto* http = c.mutable_attributes()->mutable_request()->mutable_http();
  http->set_method(method);
  http->set_path(path);
  if (!host.empty()) http->set_host(host);
  for (const auto& [n, v] : headers) {
    auto* h = http->add_headers();
    h->set_key(n);
    h->set_value(v);
  }
  return c;
}

// A TCP check as Envoy's network ext_authz filter sends it: peers, no request.
inline auth::CheckRequest mk_tcp_check(const std::string& principal, const std::string& source_ip,
                                       const std::string& destination_ip, std::uint32_t port) {
  auth::CheckRequest c;
  mk_peer(*c.mutable_attributes()->mutable_source(), principal, source_ip);
  mk_peer(*c.mutable_attributes()->mutable_destination(), "", destination_ip, port);
  return c;
}

// Sets metadata_context.filter_metadata[ns] from a JSON object.
inline void mk_metadata(auth::CheckRequest& c, const std::string& ns, const nlohmann::json& j) {
  (*c.mutable_attributes()->mutable_metadata_context()->mutable_filter_metadata())[ns] =
      mk_struct(j);
}

}  // namespace tollgate::testing

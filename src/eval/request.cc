#include "tollgate/eval/request.h"

#include <cctype>

#include "tollgate/compile/table.h"
#include "tollgate/policy/values.h"
#include "tollgate/util/strings.h"

namespace tollgate::eval {
namespace {

using nlohmann::json;

util::Result<std::optional<std::string>> opt_string(const json& o, const char* key,
                                                    const std::string& where) {
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return std::optional<std::string>();
  if (!it->is_string()) return util::make_error(where + "." + key + ": must be a string");
  return std::optional<std::string>(it->get<std::string>());
}

bool unreserved(int c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

// Decodes %XX for the characters `pred` accepts; other escapes are kept (hex upper-cased).
template <typename Pred>
std::string decode_some(std::string_view s, Pred pred) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      const int hi = util::hex_digit(s[i + 1]);
      const int lo = util::hex_digit(s[i + 2]);
      if (hi >= 0 && lo >= 0) {
        const int c = hi * 16 + lo;
        if (pred(c)) {
          out.push_back(static_cast<char>(c));
        } else {
          out.push_back('%');
          out.push_back("0123456789ABCDEF"[hi]);
          out.push_back("0123456789ABCDEF"[lo]);
        }
        i += 2;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

// RFC 3986 5.2.4 remove_dot_segments on an absolute path.
std::string remove_dots(std::string_view in) {
  std::vector<std::string_view> segs;
  std::size_t pos = 0;
  if (!in.empty() && in[0] == '/') pos = 1;
  bool trailing_slash = false;
  while (pos <= in.size()) {
    std::size_t end = in.find('/', pos);
    if (end == std::string_view::npos) end = in.size();
    std::string_view seg = in.substr(pos, end - pos);
    const bool last = end == in.size();
    if (seg == ".") {
      trailing_slash = last;
    } else if (seg == "..") {
      if (!segs.empty()) segs.pop_back();
      trailing_slash = last;
    } else {
      segs.push_back(seg);
      trailing_slash = false;
    }
    pos = end + 1;
  }
  std::string out;
  for (auto s : segs) {
    out.push_back('/');
    out += s;
  }
  if (trailing_slash || out.empty()) out.push_back('/');
  return out;
}

std::string merge_slashes(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == '/' && !out.empty() && out.back() == '/') continue;
    out.push_back(c);
  }
  return out;
}

// True when normalize_path would return `path` unchanged (the common case): no escapes,
// backslashes, fragments or dot segments, and no "//" where slashes are merged.
bool already_normal(std::string_view path, policy::PathNormalization n) {
  if (path.empty() || path[0] != '/') return false;
  const bool merge = n == policy::PathNormalization::kMergeSlashes ||
                     n == policy::PathNormalization::kDecodeAndMergeSlashes;
  const std::size_t end = std::min(path.find('?'), path.size());
  for (std::size_t i = 0; i < end; ++i) {
    const char c = path[i];
    if (c == '%' || c == '\\' || c == '#') return false;
    if (c == '/' && i + 1 < end && (path[i + 1] == '.' || (merge && path[i + 1] == '/'))) {
      return false;
    }
  }
  return path.find('#', end) == std::string_view::npos;
}

// Where requestPrincipals and request.auth.principal find the token's issuer and subject
// (docs/semantics.md#request-principals-and-jwt-claims). Istio matches the two separately
// in the jwt_authn payload; a caller may give the payload (jwtClaims), the principal
// ("iss/sub", requestPrincipal), or both. With both, the principal must be the payload's
// iss + "/" + sub, as far as the payload has them, and the payload's iss and sub are used, so
// an issuer or subject with a '/' in it is split where the token splits it. Otherwise the
// principal is split at its last '/', as Istio splits a requestPrincipals value. Returns what
// disagrees, if anything; out.iss and out.sub are set either way.
std::optional<std::string> resolve_iss_sub(const Request& r, PreparedRequest& out) {
  out.iss = out.sub = nullptr;
  const json* iss = nullptr;
  const json* sub = nullptr;
  if (r.jwt_claims.is_object()) {
    if (auto it = r.jwt_claims.find("iss"); it != r.jwt_claims.end()) iss = &*it;
    if (auto it = r.jwt_claims.find("sub"); it != r.jwt_claims.end()) sub = &*it;
  }
  if (!r.request_principal) {
    if (iss != nullptr && iss->is_string()) out.iss = iss->get_ptr<const std::string*>();
    if (sub != nullptr && sub->is_string()) out.sub = sub->get_ptr<const std::string*>();
    return std::nullopt;
  }
  const std::string& rp = *r.request_principal;
  auto conflict = [&rp](const std::string& what) {
    return "requestPrincipal \"" + rp + "\" disagrees with jwtClaims: " + what;
  };
  if ((iss != nullptr && !iss->is_string()) || (sub != nullptr && !sub->is_string())) {
    return conflict("its iss and sub must be strings");
  }
  const std::string* ci = iss != nullptr ? iss->get_ptr<const std::string*>() : nullptr;
  const std::string* cs = sub != nullptr ? sub->get_ptr<const std::string*>() : nullptr;
  const std::string_view v(rp);
  if (ci != nullptr && cs != nullptr) {
    if (v.size() != ci->size() + 1 + cs->size() || !v.starts_with(*ci) || v[ci->size()] != '/' ||
        !v.ends_with(*cs)) {
      return conflict("iss/sub is \"" + *ci + "/" + *cs + "\"");
    }
    out.iss = ci;
    out.sub = cs;
  } else if (ci != nullptr) {
    if (v.size() <= ci->size() || !v.starts_with(*ci) || v[ci->size()] != '/') {
      return conflict("iss is \"" + *ci + "\"");
    }
    out.iss = ci;
    out.sub_storage.assign(v.substr(ci->size() + 1));
    out.sub = &out.sub_storage;
  } else if (cs != nullptr) {
    if (v.size() <= cs->size() || !v.ends_with(*cs) || v[v.size() - cs->size() - 1] != '/') {
      return conflict("sub is \"" + *cs + "\"");
    }
    out.iss_storage.assign(v.substr(0, v.size() - cs->size() - 1));
    out.iss = &out.iss_storage;
    out.sub = cs;
  } else {
    const auto idx = v.rfind('/');
    out.iss_storage.assign(v.substr(0, idx));
    out.iss = &out.iss_storage;
    if (idx != std::string_view::npos) {
      out.sub_storage.assign(v.substr(idx + 1));
      out.sub = &out.sub_storage;
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> normalize_path(std::string_view full, policy::PathNormalization n) {
  // The fragment is never part of the request path; the query is kept as is.
  if (auto hash = full.find('#'); hash != std::string_view::npos) full = full.substr(0, hash);
  std::string_view path = full;
  std::string_view query;
  if (auto q = full.find('?'); q != std::string_view::npos) {
    path = full.substr(0, q);
    query = full.substr(q);
  }
  for (std::size_t i = 0; i + 2 < path.size(); ++i) {
    if (path[i] == '%' && path[i + 1] == '0' && path[i + 2] == '0') return std::nullopt;
  }
  if (n == policy::PathNormalization::kNone) return std::string(full);
  std::string p(path);
  if (n == policy::PathNormalization::kDecodeAndMergeSlashes) {
    p = decode_some(p, [](int c) { return c == '/' || c == '\\'; });
  }
  for (char& c : p) {
    if (c == '\\') c = '/';
  }
  p = decode_some(p, [](int c) { return unreserved(c); });
  if (p.empty() || p[0] != '/') p.insert(p.begin(), '/');
  p = remove_dots(p);
  if (n != policy::PathNormalization::kBase) p = merge_slashes(p);
  p += query;
  return p;
}

namespace {

util::Status check_fields(const json& j) {
  static const char* kKnown[] = {"protocol",
                                 "source",
                                 "requestPrincipal",
                                 "jwtClaims",
                                 "spaceDelimitedClaims",
                                 "method",
                                 "path",
                                 "host",
                                 "port",
                                 "headers",
                                 "sni",
                                 "destinationIp",
                                 "extAuthzDecision",
                                 "dynamicMetadata"};
  for (const auto& [key, val] : j.items()) {
    bool known = false;
    for (const char* k : kKnown) known = known || key == k;
    if (!known) return util::make_error("request." + key + ": unknown field");
  }
  return util::ok();
}

util::Status parse_protocol(const json& j, Request& r) {
  TOLLGATE_TRY(protocol, opt_string(j, "protocol", "request"));
  if (!protocol) return util::ok();
  const std::string p = util::lowered(*protocol);
  if (p == "tcp") {
    r.tcp = true;
  } else if (p != "http" && p != "http2" && p != "grpc") {
    return util::make_error("request.protocol: must be \"http\" or \"tcp\"");
  }
  return util::ok();
}

util::Status parse_source(const json& src, Request& r) {
  if (!src.is_object()) return util::make_error("request.source: must be an object");
  for (const auto& [key, val] : src.items()) {
    if (key != "principal" && key != "ip" && key != "remoteIp") {
      return util::make_error("request.source." + key + ": unknown field");
    }
  }
  TOLLGATE_TRY(pr, opt_string(src, "principal", "request.source"));
  if (pr && !pr->empty()) {
    std::string v = *pr;
    if (v.rfind("spiffe://", 0) == 0) v = v.substr(9);
    r.principal = v;
  }
  TOLLGATE_TRY(ip, opt_string(src, "ip", "request.source"));
  TOLLGATE_TRY(rip, opt_string(src, "remoteIp", "request.source"));
  if (ip && !policy::parse_ip(*ip)) {
    return util::make_error("request.source.ip: \"" + *ip + "\" is not an IP address");
  }
  if (rip && !policy::parse_ip(*rip)) {
    return util::make_error("request.source.remoteIp: \"" + *rip + "\" is not an IP address");
  }
  r.source_ip = ip;
  r.remote_ip = rip ? rip : ip;
  return util::ok();
}

// requestPrincipal, jwtClaims and spaceDelimitedClaims.
util::Status parse_jwt(const json& j, Request& r) {
  TOLLGATE_TRY(rp, opt_string(j, "requestPrincipal", "request"));
  r.request_principal = rp;
  if (auto it = j.find("jwtClaims"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) return util::make_error("request.jwtClaims: must be an object");
    r.jwt_claims = *it;
  }
  if (auto it = j.find("spaceDelimitedClaims"); it != j.end() && !it->is_null()) {
    if (!it->is_array()) return util::make_error("request.spaceDelimitedClaims: must be a list");
    for (const auto& e : *it) {
      if (!e.is_string()) {
        return util::make_error("request.spaceDelimitedClaims: must be a list of strings");
      }
      r.space_delimited_claims.push_back(e.get<std::string>());
    }
  }
  return util::ok();
}

// method, path, host, sni, destinationIp and port.
util::Status parse_target(const json& j, Request& r) {
  TOLLGATE_TRY(method, opt_string(j, "method", "request"));
  TOLLGATE_TRY(path, opt_string(j, "path", "request"));
  TOLLGATE_TRY(host, opt_string(j, "host", "request"));
  TOLLGATE_TRY(sni, opt_string(j, "sni", "request"));
  TOLLGATE_TRY(dip, opt_string(j, "destinationIp", "request"));
  if (dip && !policy::parse_ip(*dip)) {
    return util::make_error("request.destinationIp: \"" + *dip + "\" is not an IP address");
  }
  r.method = method;
  r.path = path;
  r.host = host;
  r.sni = sni;
  r.destination_ip = dip;
  const auto it = j.find("port");
  if (it == j.end() || it->is_null()) return util::ok();
  if (it->is_number_integer() || it->is_number_unsigned()) {
    const auto v = it->get<long long>();
    if (v < 0 || v > 65535) return util::make_error("request.port: must be 0-65535");
    r.port = static_cast<int>(v);
  } else if (it->is_string()) {
    auto p = policy::parse_port(it->get<std::string>());
    if (!p.ok()) return util::make_error("request.port: must be 0-65535");
    r.port = *p;
  } else {
    return util::make_error("request.port: must be a number");
  }
  return util::ok();
}

util::Status parse_headers(const json& headers, Request& r) {
  if (!headers.is_object()) return util::make_error("request.headers: must be an object");
  for (const auto& [name, val] : headers.items()) {
    std::string lower = util::lowered(name);
    std::string joined;
    if (val.is_string()) {
      joined = val.get<std::string>();
    } else if (val.is_array()) {
      for (std::size_t i = 0; i < val.size(); ++i) {
        if (!val[i].is_string()) {
          return util::make_error("request.headers." + name + ": must be strings");
        }
        if (i > 0) joined.push_back(',');
        joined += val[i].get<std::string>();
      }
    } else {
      return util::make_error("request.headers." + name + ": must be a string or a list");
    }
    // Repeated names (different case) are joined with ',' as Envoy does.
    bool merged = false;
    for (auto& [n, v] : r.headers) {
      if (n == lower) {
        v += "," + joined;
        merged = true;
      }
    }
    if (!merged) r.headers.emplace_back(std::move(lower), std::move(joined));
  }
  return util::ok();
}

util::Status parse_ext_authz(const json& decision, Request& r) {
  auto check = [](const json& v, const std::string& where) -> util::Result<std::string> {
    if (!v.is_string()) return util::make_error(where + ": must be \"ALLOW\" or \"DENY\"");
    std::string s = v.get<std::string>();
    util::to_upper(s);
    if (s != "ALLOW" && s != "DENY") {
      return util::make_error(where + ": must be \"ALLOW\" or \"DENY\"");
    }
    return s;
  };
  if (decision.is_object()) {
    for (const auto& [prov, v] : decision.items()) {
      TOLLGATE_TRY(s, check(v, "request.extAuthzDecision." + prov));
      r.ext_authz_by_provider[prov] = s;
    }
  } else {
    TOLLGATE_TRY(s, check(decision, "request.extAuthzDecision"));
    r.ext_authz_default = s;
  }
  return util::ok();
}

}  // namespace

util::Result<Request> parse_request(const json& j) {
  if (!j.is_object()) return util::make_error("request: must be an object");
  Request r;
  TOLLGATE_TRY_STATUS(check_fields(j));
  TOLLGATE_TRY_STATUS(parse_protocol(j, r));
  if (auto it = j.find("source"); it != j.end() && !it->is_null()) {
    TOLLGATE_TRY_STATUS(parse_source(*it, r));
  }
  TOLLGATE_TRY_STATUS(parse_jwt(j, r));
  TOLLGATE_TRY_STATUS(parse_target(j, r));
  if (auto it = j.find("headers"); it != j.end() && !it->is_null()) {
    TOLLGATE_TRY_STATUS(parse_headers(*it, r));
  }
  if (auto it = j.find("dynamicMetadata"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) return util::make_error("request.dynamicMetadata: must be an object");
    r.dynamic_metadata = *it;
  }
  if (auto it = j.find("extAuthzDecision"); it != j.end() && !it->is_null()) {
    TOLLGATE_TRY_STATUS(parse_ext_authz(*it, r));
  }
  if (auto conflict = request_principal_conflict(r)) {
    return util::make_error("request." + *conflict);
  }
  return r;
}

std::optional<std::string> request_principal_conflict(const Request& r) {
  PreparedRequest scratch;
  return resolve_iss_sub(r, scratch);
}

void prepare(const Request& r, policy::PathNormalization n, PreparedRequest& out) {
  out.request = &r;
  out.http = !r.tcp;
  out.peer = r.principal.has_value();
  out.uri.clear();
  out.principal = {};
  out.trust_domain = {};
  if (out.peer) {
    out.uri.reserve(9 + r.principal->size());
    out.uri.append("spiffe://").append(*r.principal);
    out.principal = std::string_view(out.uri).substr(9);
    auto slash = out.principal.find('/');
    if (slash != std::string_view::npos) out.trust_domain = out.principal.substr(0, slash);
  }
  auto ip = [](const std::optional<std::string>& s, bool& has, policy::IpAddress& a) {
    has = false;
    if (!s) return;
    if (auto p = policy::parse_ip(*s)) {
      has = true;
      a = *p;
    }
  };
  ip(r.source_ip, out.has_source_ip, out.source_ip);
  ip(r.remote_ip, out.has_remote_ip, out.remote_ip);
  ip(r.destination_ip, out.has_destination_ip, out.destination_ip);
  out.rejected.reset();
  out.has_host = false;
  out.has_path = false;
  out.path = {};
  out.jwt = false;
  out.iss = out.sub = nullptr;
  out.iss_sub_key.clear();
  if (out.http) {
    out.jwt = r.request_principal.has_value() || r.jwt_claims.is_object();
    if (auto conflict = resolve_iss_sub(r, out)) out.rejected = std::move(conflict);
    if (out.iss != nullptr && out.sub != nullptr) {
      out.iss_sub_key.append(*out.iss).push_back('\0');
      out.iss_sub_key.append(*out.sub);
    }
    if (r.host) {
      out.has_host = true;
      out.host = *r.host;
      util::to_lower(out.host);
    }
    if (r.path && already_normal(*r.path, n)) {
      out.has_path = true;
      out.path_with_query.assign(*r.path);
      std::string_view pv(out.path_with_query);
      out.path = pv.substr(0, pv.find('?'));
    } else if (r.path) {
      auto p = normalize_path(*r.path, n);
      if (!p) {
        out.rejected = "the path contains %00, which Envoy rejects with 400 before authorization";
      } else {
        out.has_path = true;
        out.path_with_query = std::move(*p);
        std::string_view pv(out.path_with_query);
        out.path = pv.substr(0, pv.find('?'));
      }
    }
  }
  out.port = r.port ? std::to_string(*r.port) : std::string();
  out.port_number = r.port.value_or(-1);
  out.principal_hash = compile::hash_bytes(out.principal);
  out.trust_domain_hash = compile::hash_bytes(out.trust_domain);
  out.method_hash = compile::hash_bytes(r.method ? std::string_view(*r.method) : "");
  out.host_hash = compile::hash_bytes(out.host);
  out.path_hash = compile::hash_bytes(out.path);
  out.iss_sub_hash = compile::hash_bytes(out.iss_sub_key);
}

}  // namespace tollgate::eval

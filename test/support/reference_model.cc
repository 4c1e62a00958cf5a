// The reference interpreter. Each matcher below says which Istio/Envoy behaviour it encodes
// (docs/semantics.md has the sources); none of it calls tollgate's policy, compile or eval code.
#include "support/reference_model.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>

namespace tollgate::testing {
namespace {

using nlohmann::json;

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

bool starts(const std::string& v, const std::string& p) { return v.rfind(p, 0) == 0; }
bool ends(const std::string& v, const std::string& s) {
  return v.size() >= s.size() && v.compare(v.size() - s.size(), s.size(), s) == 0;
}

// Istio's StringMatcher (matcher.StringMatcher): "*" alone is the regex .+ (non-empty),
// a leading '*' a suffix, a trailing '*' a prefix, anything else exact.
bool like(const std::string& pattern, const std::string& v) {
  if (pattern == "*") return !v.empty();
  if (pattern.size() > 1 && pattern[0] == '*') return ends(v, pattern.substr(1));
  if (pattern.size() > 1 && pattern.back() == '*') {
    return starts(v, pattern.substr(0, pattern.size() - 1));
  }
  return pattern == v;
}

// '*' matches any run of characters, everything else literally (namespaces: ".*/ns/<v>/.*"
// with '*' turned into ".*", generator.go srcNamespaceGenerator).
bool glob(const std::string& p, const std::string& v) {
  if (p.empty()) return v.empty();
  if (p[0] == '*') {
    for (std::size_t k = 0; k <= v.size(); ++k) {
      if (glob(p.substr(1), v.substr(k))) return true;
    }
    return false;
  }
  return !v.empty() && p[0] == v[0] && glob(p.substr(1), v.substr(1));
}

// An address as its family and bytes: IPv4 is 4 bytes, IPv6 16, and ::ffff:a.b.c.d stays an
// IPv6 address (Envoy's Address::Ipv6Instance).
std::optional<std::vector<unsigned char>> address(const std::string& text) {
  unsigned char buf[16];
  if (inet_pton(AF_INET, text.c_str(), buf) == 1) return std::vector<unsigned char>(buf, buf + 4);
  if (inet_pton(AF_INET6, text.c_str(), buf) == 1) {
    return std::vector<unsigned char>(buf, buf + 16);
  }
  return std::nullopt;
}

// ipBlocks, remoteIpBlocks, source.ip, remote.ip, destination.ip: Istio turns each value into
// an Envoy CidrRange (util.AddrStrToCidrRange; a bare address is a full-length range), and
// CidrRange::isInRange is false unless the address and the range are of the same IP version,
// then compares the leading `bits` bits.
bool in_cidr(const std::string& cidr, const std::string& ip) {
  const auto slash = cidr.find('/');
  const auto net = address(cidr.substr(0, slash));
  const auto addr = address(ip);
  if (!net || !addr || net->size() != addr->size()) return false;
  const int bits = slash == std::string::npos ? static_cast<int>(net->size() * 8)
                                              : std::stoi(cidr.substr(slash + 1));
  for (int i = 0; i < bits; ++i) {
    const int mask = 0x80 >> (i % 8);
    if (((*net)[i / 8] & mask) != ((*addr)[i / 8] & mask)) return false;
  }
  return true;
}

struct Req {
  bool tcp = false;
  std::optional<std::string> principal, ip, remote_ip, dest_ip, method, path, host, port;
  bool jwt = false;                     // a validated token came with the request
  std::optional<std::string> iss, sub;  // the payload's string iss and sub
  json claims;                          // the payload; null when only the principal is known
  json headers = json::object();
  std::optional<std::string> invalid;
};

// The token's iss and sub (docs/semantics.md#request-principals-and-jwt-claims): from the
// payload when only it is given; from the principal split at its last '/' when only that is
// given; with both, the principal must read "<iss>/<sub>" for whatever of the two the payload
// has, and the payload's values are used.
void read_token(const json& r, Req& q) {
  const bool has_rp = r.contains("requestPrincipal");
  q.claims = r.contains("jwtClaims") ? r["jwtClaims"] : json();
  q.jwt = has_rp || q.claims.is_object();
  const json* iss = q.claims.is_object() && q.claims.contains("iss") ? &q.claims["iss"] : nullptr;
  const json* sub = q.claims.is_object() && q.claims.contains("sub") ? &q.claims["sub"] : nullptr;
  if (!has_rp) {
    if (iss != nullptr && iss->is_string()) q.iss = iss->get<std::string>();
    if (sub != nullptr && sub->is_string()) q.sub = sub->get<std::string>();
    return;
  }
  const std::string rp = r["requestPrincipal"].get<std::string>();
  if ((iss != nullptr && !iss->is_string()) || (sub != nullptr && !sub->is_string())) {
    q.invalid = "non-string iss/sub beside a requestPrincipal";
    return;
  }
  if (iss != nullptr) q.iss = iss->get<std::string>();
  if (sub != nullptr) q.sub = sub->get<std::string>();
  if (q.iss && q.sub) {
    if (rp != *q.iss + "/" + *q.sub) q.invalid = "requestPrincipal is not iss/sub";
  } else if (q.iss) {
    if (!starts(rp, *q.iss + "/")) q.invalid = "requestPrincipal does not start with iss/";
    q.sub = rp.substr(std::min(rp.size(), q.iss->size() + 1));
  } else if (q.sub) {
    if (!ends(rp, "/" + *q.sub)) q.invalid = "requestPrincipal does not end with /sub";
    q.iss = rp.substr(0, rp.size() - std::min(rp.size(), q.sub->size() + 1));
  } else {
    const auto at = rp.rfind('/');
    q.iss = rp.substr(0, at);
    if (at != std::string::npos) q.sub = rp.substr(at + 1);
  }
}

Req read(const json& r) {
  Req q;
  q.tcp = r.value("protocol", "http") == "tcp";
  if (r.contains("source")) {
    const auto& s = r["source"];
    if (s.contains("principal")) q.principal = s["principal"].get<std::string>();
    if (s.contains("ip")) q.ip = s["ip"].get<std::string>();
    q.remote_ip = s.contains("remoteIp") ? std::optional(s["remoteIp"].get<std::string>()) : q.ip;
  }
  if (r.contains("destinationIp")) q.dest_ip = r["destinationIp"].get<std::string>();
  read_token(r, q);
  if (!q.tcp) {
    if (r.contains("method")) q.method = r["method"].get<std::string>();
    if (r.contains("path")) {
      std::string p = r["path"].get<std::string>();
      q.path = p.substr(0, p.find('?'));
    }
    if (r.contains("host")) q.host = lower(r["host"].get<std::string>());
    if (r.contains("headers")) q.headers = r["headers"];
  } else {
    q.jwt = false;  // no jwt_authn filter on a TCP chain
  }
  if (r.contains("port")) q.port = std::to_string(r["port"].get<int>());
  return q;
}

bool http_only_field(const std::string& f) {
  return f == "requestPrincipals" || f == "notRequestPrincipals" || f == "hosts" ||
         f == "notHosts" || f == "methods" || f == "notMethods" || f == "paths" || f == "notPaths";
}

bool http_only_key(const std::string& k) { return starts(k, "request."); }

// requestPrincipals and request.auth.principal (generator.go requestPrincipalGenerator): the
// value is split at its last '/' into an issuer and a subject matcher, both applied to the
// token's payload. "*" is .+ for both; "*x" with a '/' is a suffix on iss (any iss for "*/x")
// and an exact sub, without one any iss and a suffix on sub; "x*" with a '/' is an exact iss
// and a prefix on sub ("iss/*" any sub), without one a prefix on iss and any sub. A missing
// iss or sub never matches.
bool request_principal_matches(const std::string& v, const Req& q) {
  if (!q.jwt || !q.iss || !q.sub) return false;
  const std::string& iss = *q.iss;
  const std::string& sub = *q.sub;
  const auto at = v.rfind('/');
  const bool found = at != std::string::npos;
  const std::string viss = found ? v.substr(0, at) : v;
  const std::string vsub = found ? v.substr(at + 1) : "";
  if (v == "*") return !iss.empty() && !sub.empty();
  if (v[0] == '*') {
    if (!found) return !iss.empty() && ends(sub, v.substr(1));
    const bool iss_ok = viss == "*" ? !iss.empty() : ends(iss, viss.substr(1));
    return iss_ok && sub == vsub;
  }
  if (v.back() == '*') {
    if (!found) return starts(iss, v.substr(0, v.size() - 1)) && !sub.empty();
    const bool sub_ok = vsub == "*" ? !sub.empty() : starts(sub, vsub.substr(0, vsub.size() - 1));
    return iss == viss && sub_ok;
  }
  return iss == viss && sub == vsub;
}

// request.auth.claims[name] (model/util.go MetadataListValueMatcherForJWTClaims): a string
// claim is matched by the StringMatcher, a list claim when any string element is; numbers,
// booleans and objects never match, nor does a missing claim or a missing payload.
bool claim_matches(const std::string& name, const std::string& v, const Req& q) {
  if (!q.jwt || !q.claims.is_object() || !q.claims.contains(name)) return false;
  const json& c = q.claims[name];
  if (c.is_string()) return like(v, c.get<std::string>());
  if (!c.is_array()) return false;
  return std::any_of(c.begin(), c.end(),
                     [&](const json& e) { return e.is_string() && like(v, e.get<std::string>()); });
}

// Does one value of a field match? (The field's name says which attribute.)
bool value_matches(const std::string& field, const std::string& v, const Req& q,
                   const std::string& policy_ns) {
  // principals / source.principal: StringMatcher on the peer's URI SAN without spiffe://;
  // a plaintext peer has none (Envoy's authenticated matcher is false without a certificate).
  if (field == "principals" || field == "source.principal") {
    return q.principal && like(v, *q.principal);
  }
  if (field == "namespaces" || field == "source.namespace") {
    if (!q.principal) return false;
    auto at = q.principal->find("/ns/");
    if (at == std::string::npos) return false;
    auto end = q.principal->find('/', at + 4);
    return glob(v, q.principal->substr(at + 4, end - at - 4));
  }
  // serviceAccounts: "<ns>/<sa>" or "<sa>" in the policy's namespace, whole segments.
  if (field == "serviceAccounts") {
    if (!q.principal) return false;
    const std::string want = v.find('/') == std::string::npos ? policy_ns + "/" + v : v;
    auto at = q.principal->find("/ns/");
    if (at == std::string::npos) return false;
    std::string rest = q.principal->substr(at + 4);  // "<ns>/sa/<sa>"
    auto sa = rest.find("/sa/");
    return sa != std::string::npos && rest.substr(0, sa) + "/" + rest.substr(sa + 4) == want;
  }
  // ipBlocks: the direct peer; remoteIpBlocks: the original client (defaults to the peer);
  // destination.ip: the local address.
  if (field == "ipBlocks" || field == "source.ip") return q.ip && in_cidr(v, *q.ip);
  if (field == "remoteIpBlocks" || field == "remote.ip") {
    return q.remote_ip && in_cidr(v, *q.remote_ip);
  }
  if (field == "destination.ip") return q.dest_ip && in_cidr(v, *q.dest_ip);
  if (field == "requestPrincipals" || field == "request.auth.principal") {
    return request_principal_matches(v, q);
  }
  if (starts(field, "request.auth.claims[")) {
    return claim_matches(field.substr(20, field.size() - 21), v, q);
  }
  // hosts: case-insensitive, "*" is header presence (HostMatcher).
  if (field == "hosts") {
    if (!q.host) return false;
    return v == "*" || like(lower(v), *q.host);
  }
  // methods: case-sensitive HeaderMatcher on :method, "*" is presence.
  if (field == "methods") return q.method && (v == "*" || like(v, *q.method));
  // paths: PathMatcher on the path without its query.
  if (field == "paths") return q.path && like(v, *q.path);
  // ports / destination.port: the workload port, exact.
  if (field == "ports" || field == "destination.port") return q.port && *q.port == v;
  // request.headers[name]: case-insensitive name, HeaderMatcher ("*" presence).
  if (starts(field, "request.headers[")) {
    const std::string name = lower(field.substr(16, field.size() - 17));
    if (!q.headers.contains(name)) return false;
    return v == "*" || like(v, q.headers[name].get<std::string>());
  }
  return false;
}

bool some_value_matches(const std::string& field, const json& values, const Req& q,
                        const std::string& ns) {
  return std::any_of(values.begin(), values.end(), [&](const json& v) {
    return value_matches(field, v.get<std::string>(), q, ns);
  });
}

// One source/operation object: every present field holds (fields ANDed, values ORed,
// notX = NOT any). On a TCP chain a DENY rule drops its HTTP-only fields (a wider deny).
bool fields_match(const json& obj, const Req& q, bool tcp_deny, const std::string& ns) {
  for (const auto& [name, values] : obj.items()) {
    if (tcp_deny && http_only_field(name)) continue;
    const bool negative = starts(name, "not");
    std::string field = negative ? name.substr(3) : name;
    if (negative) field[0] = static_cast<char>(std::tolower(field[0]));
    if (values.empty()) continue;
    if (some_value_matches(field, values, q, ns) == negative) return false;
  }
  return true;
}

// An ALLOW rule with any HTTP-only value is not generated on a TCP chain (a smaller allow).
bool dropped_on_tcp(const json& rule) {
  for (const char* side : {"from", "to"}) {
    if (!rule.contains(side)) continue;
    for (const auto& e : rule[side]) {
      for (const auto& [k, obj] : e.items()) {
        for (const auto& [name, values] : obj.items()) {
          if (http_only_field(name) && !values.empty()) return true;
        }
      }
    }
  }
  if (rule.contains("when")) {
    for (const auto& c : rule["when"]) {
      if (http_only_key(c["key"].get<std::string>())) return true;
    }
  }
  return false;
}

// A rule: any `from` and any `to` (empty = anything) and every `when`.
bool rule_matches(const json& rule, const Req& q, bool deny, const std::string& ns) {
  if (q.tcp && !deny && dropped_on_tcp(rule)) return false;
  const bool tcp_deny = q.tcp && deny;
  if (rule.contains("from") && !rule["from"].empty()) {
    bool any = false;
    for (const auto& e : rule["from"]) any = any || fields_match(e["source"], q, tcp_deny, ns);
    if (!any) return false;
  }
  if (rule.contains("to") && !rule["to"].empty()) {
    bool any = false;
    for (const auto& e : rule["to"]) any = any || fields_match(e["operation"], q, tcp_deny, ns);
    if (!any) return false;
  }
  if (rule.contains("when")) {
    for (const auto& c : rule["when"]) {
      const std::string key = c["key"].get<std::string>();
      if (tcp_deny && http_only_key(key)) continue;
      if (c.contains("values") && !c["values"].empty() &&
          !some_value_matches(key, c["values"], q, ns)) {
        return false;
      }
      if (c.contains("notValues") && some_value_matches(key, c["notValues"], q, ns)) return false;
    }
  }
  return true;
}

// Scope: the root namespace's policies and the workload's namespace's; matchLabels a subset.
bool selects(const json& p, const json& w) {
  const std::string ns = p["metadata"].value("namespace", "default");
  if (ns != "istio-system" && ns != w["namespace"].get<std::string>()) return false;
  if (!p.contains("spec") || !p["spec"].contains("selector")) return true;
  const json& labels = p["spec"]["selector"].value("matchLabels", json::object());
  for (const auto& [k, v] : labels.items()) {
    if (!w.contains("labels") || !w["labels"].contains(k) || w["labels"][k] != v) return false;
  }
  return true;
}

}  // namespace

// DENY before ALLOW; no ALLOW policy allows; an ALLOW policy without a matching rule denies;
// AUDIT never decides. The deciding rule is the first in byte order of Envoy's policy name.
RefDecision reference_decide(const std::vector<json>& policies, const json& workload,
                             const json& request) {
  const Req q = read(request);
  if (q.invalid) return {q.invalid, false, std::nullopt};
  std::optional<std::string> deny_key, allow_key;
  std::optional<std::string> deny_policy, allow_policy;
  bool has_allow = false;
  for (const auto& p : policies) {
    if (!selects(p, workload)) continue;
    const json spec = p.value("spec", json::object());
    const std::string action = spec.value("action", "ALLOW");
    const std::string ns = p["metadata"].value("namespace", "default");
    const std::string name = p["metadata"]["name"].get<std::string>();
    if (action == "ALLOW") has_allow = true;
    if (action != "ALLOW" && action != "DENY") continue;  // AUDIT never decides
    if (!spec.contains("rules")) continue;
    for (std::size_t i = 0; i < spec["rules"].size(); ++i) {
      if (!rule_matches(spec["rules"][i], q, action == "DENY", ns)) continue;
      const std::string key = "ns[" + ns + "]-policy[" + name + "]-rule[" + std::to_string(i) + "]";
      auto& best = action == "DENY" ? deny_key : allow_key;
      if (!best || key < *best) {
        best = key;
        (action == "DENY" ? deny_policy : allow_policy) = ns + "/" + name;
      }
    }
  }
  if (deny_key) return {std::nullopt, false, deny_policy};
  if (!has_allow) return {std::nullopt, true, std::nullopt};
  if (allow_key) return {std::nullopt, true, allow_policy};
  return {std::nullopt, false, std::nullopt};
}

}  // namespace tollgate::testing

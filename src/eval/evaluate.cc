// Matching a prepared request against a decision table. (Explaining a decision: explain.cc.)
#include "tollgate/eval/evaluate.h"

#include "match.h"

#include <optional>
#include <string_view>

#include "tollgate/util/json_text.h"

namespace tollgate::eval {
namespace detail {

const std::string* header(const PreparedRequest& r, std::string_view name) {
  for (const auto& [n, v] : r.request->headers) {
    if (n == name) return &v;
  }
  return nullptr;
}

}  // namespace detail

namespace {

using compile::Predicate;
using compile::TableRule;
using compile::ValueIndex;
using detail::header;
using detail::side_matches;
using nlohmann::json;
using policy::Attr;

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }
bool ends_with(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

// Istio StringMatcher over one value, with the index's exact/prefix/suffix/.+ parts.
bool string_match(const ValueIndex& ix, std::string_view v, std::uint64_t hash) {
  if (ix.any_nonempty && !v.empty()) return true;
  if (ix.exact.contains(v, hash)) return true;
  for (const auto& p : ix.prefixes) {
    if (starts_with(v, p)) return true;
  }
  for (const auto& s : ix.suffixes) {
    if (ends_with(v, s)) return true;
  }
  return false;
}

bool string_match(const ValueIndex& ix, std::string_view v) {
  return string_match(ix, v, compile::hash_bytes(v));
}

// One pattern in Istio's StringMatcher syntax.
bool pattern_match(std::string_view pat, std::string_view v) {
  if (pat == "*") return !v.empty();
  if (!pat.empty() && pat.front() == '*') return ends_with(v, pat.substr(1));
  if (!pat.empty() && pat.back() == '*') return starts_with(v, pat.substr(0, pat.size() - 1));
  return pat == v;
}

bool ip_match(const ValueIndex& ix, bool has, const policy::IpAddress& ip) {
  if (!has) return false;
  if (ix.exact.contains(ip.key())) return true;
  for (const auto& c : ix.cidrs) {
    if (c.contains(ip)) return true;
  }
  return false;
}

// spiffe://.+/ns/<ns>/(.+/|)sa/<sa>(/.+)?  (full match)
bool service_account_match(std::string_view uri, std::string_view ns, std::string_view sa) {
  constexpr std::string_view kPrefix = "spiffe://";
  if (!starts_with(uri, kPrefix)) return false;
  std::string needle = "/ns/";
  needle.append(ns).push_back('/');
  for (std::size_t at = uri.find(needle, kPrefix.size() + 1); at != std::string_view::npos;
       at = uri.find(needle, at + 1)) {
    std::string_view rest = uri.substr(at + needle.size());
    std::string sa_part = "sa/";
    sa_part.append(sa);
    // Try every place "sa/<sa>" can start: right away, or after ".+/".
    for (std::size_t k = 0; k + sa_part.size() <= rest.size(); ++k) {
      if (k != 0 && (k < 2 || rest[k - 1] != '/')) continue;
      if (rest.compare(k, sa_part.size(), sa_part) != 0) continue;
      std::string_view tail = rest.substr(k + sa_part.size());
      if (tail.empty() || (tail.size() >= 2 && tail[0] == '/')) return true;
    }
  }
  return false;
}

bool kind_match(ValueIndex::Match kind, const std::string& want, const std::string* have) {
  if (have == nullptr) return false;
  switch (kind) {
    case ValueIndex::Match::kExact:
      return *have == want;
    case ValueIndex::Match::kPrefix:
      return starts_with(*have, want);
    case ValueIndex::Match::kSuffix:
      return ends_with(*have, want);
    case ValueIndex::Match::kNonEmpty:
      return !have->empty();
  }
  return false;
}

// A JWT claim (string or list of strings) against the index.
bool claim_value_match(const ValueIndex& ix, const json& v, bool split_spaces) {
  if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    if (!split_spaces) return string_match(ix, s);
    std::size_t pos = 0;
    while (pos <= s.size()) {
      std::size_t end = s.find(' ', pos);
      if (end == std::string::npos) end = s.size();
      if (end > pos && string_match(ix, std::string_view(s).substr(pos, end - pos))) return true;
      pos = end + 1;
    }
    return false;
  }
  if (v.is_array()) {
    for (const auto& e : v) {
      if (e.is_string() && string_match(ix, e.get_ref<const std::string&>())) return true;
    }
  }
  return false;
}

const json* claim_at(const json& claims, std::string_view path) {
  const json* cur = &claims;
  std::size_t start = 0;
  while (true) {
    if (!cur->is_object()) return nullptr;
    std::size_t z = path.find('\0', start);
    std::string_view key =
        path.substr(start, z == std::string_view::npos ? std::string_view::npos : z - start);
    auto it = cur->find(key);
    if (it == cur->end()) return nullptr;
    cur = &*it;
    if (z == std::string_view::npos) return cur;
    start = z + 1;
  }
}

bool namespace_match(const ValueIndex& ix, const PreparedRequest& r) {
  if (!r.peer) return false;
  if (!ix.exact.empty()) {
    std::string_view u(r.uri);
    for (std::size_t at = u.find("/ns/"); at != std::string_view::npos;
         at = u.find("/ns/", at + 1)) {
      std::size_t end = u.find('/', at + 4);
      if (end != std::string_view::npos && ix.exact.contains(u.substr(at + 4, end - at - 4))) {
        return true;
      }
    }
  }
  for (const auto& g : ix.globs) {
    if (g.matches(r.uri)) return true;
  }
  return false;
}

bool trust_domain_match(const ValueIndex& ix, const PreparedRequest& r) {
  if (!r.peer) return false;
  if (ix.any_nonempty) return true;
  if (!r.trust_domain.empty() && ix.exact.contains(r.trust_domain, r.trust_domain_hash)) {
    return true;
  }
  for (const auto& g : ix.globs) {
    if (g.matches(r.principal)) return true;
  }
  return false;
}

bool request_principal_match(const ValueIndex& ix, const PreparedRequest& r) {
  if (!r.iss_sub_key.empty() || (r.iss != nullptr && r.sub != nullptr)) {
    if (ix.exact.contains(r.iss_sub_key, r.iss_sub_hash)) return true;
  }
  for (const auto& m : ix.iss_sub) {
    if (kind_match(m.iss_kind, m.iss, r.iss) && kind_match(m.sub_kind, m.sub, r.sub)) {
      return true;
    }
  }
  return false;
}

// audiences, presenter and claims: a claim path in the JWT's claims.
bool claim_match(const Predicate& p, const PreparedRequest& r) {
  if (!r.request->jwt_claims.is_object()) return false;
  std::string_view path = p.attr == Attr::kAudiences   ? "aud"
                          : p.attr == Attr::kPresenter ? "azp"
                                                       : std::string_view(p.arg);
  const json* v = claim_at(r.request->jwt_claims, path);
  if (v == nullptr) return false;
  bool split = false;
  if (path.find('\0') == std::string_view::npos) {
    split = path == "scope" || path == "permission";
    for (const auto& c : r.request->space_delimited_claims) split = split || c == path;
  }
  return claim_value_match(p.index, *v, split);
}

bool path_match(const ValueIndex& ix, const PreparedRequest& r) {
  if (!r.has_path) return false;
  if (string_match(ix, r.path, r.path_hash)) return true;
  for (const auto& t : ix.templates) {
    if (t.matches(r.path)) return true;
  }
  return false;
}

bool metadata_match(const Predicate& p, const PreparedRequest& r) {
  const json& md = r.request->dynamic_metadata;
  if (!md.is_object()) return false;
  std::string_view arg = p.arg;
  const auto z = arg.find('\0');
  auto f = md.find(arg.substr(0, z));
  if (f == md.end() || !f->is_object()) return false;
  auto v = f->find(arg.substr(z + 1));
  if (v == f->end()) return false;
  if (v->is_string()) return string_match(p.index, v->get_ref<const std::string&>());
  if (v->is_array()) {
    for (const auto& e : *v) {
      if (!e.is_string()) continue;
      for (const auto& lv : p.index.list_values) {
        if (pattern_match(lv, e.get_ref<const std::string&>())) return true;
      }
    }
  }
  return false;
}

// A header, with the pseudo-headers Envoy gives HTTP/1 requests too.
bool header_match(const Predicate& p, const PreparedRequest& r) {
  const std::string* v = nullptr;
  std::string_view name = p.arg;
  if (name == ":path") {
    if (!r.has_path) return false;
    v = &r.path_with_query;
  } else if (name == ":method") {
    v = r.request->method ? &*r.request->method : nullptr;
  } else if (name == ":authority" || name == "host") {
    v = r.request->host ? &*r.request->host : header(r, name);
  } else {
    v = header(r, name);
  }
  if (v == nullptr) return false;
  return p.index.present || string_match(p.index, *v);
}

bool conj_matches(const compile::Conjunction& c, const PreparedRequest& r, bool jwt_visible) {
  for (const auto& p : c.all) {
    if (p.http_only && !r.http) continue;  // not generated on a TCP chain
    if (detail::some_value_matches(p, r, jwt_visible) == p.negate) return false;
  }
  return true;
}

const TableRule* first_match(const std::vector<TableRule>& rules, const PreparedRequest& r,
                             bool custom_stage) {
  for (const auto& rule : rules) {
    if (rule_matches(rule, r, custom_stage)) return &rule;
  }
  return nullptr;
}

}  // namespace

namespace detail {

bool some_value_matches(const Predicate& p, const PreparedRequest& r, bool jwt_visible) {
  const ValueIndex& ix = p.index;
  switch (p.attr) {
    case Attr::kSourcePrincipal:
      return r.peer && string_match(ix, r.principal, r.principal_hash);
    case Attr::kSourceNamespace:
      return namespace_match(ix, r);
    case Attr::kSourceServiceAccount:
      if (!r.peer) return false;
      for (const auto& [ns, sa] : ix.service_accounts) {
        if (service_account_match(r.uri, ns, sa)) return true;
      }
      return false;
    case Attr::kSourceTrustDomain:
      return trust_domain_match(ix, r);
    case Attr::kSourceIp:
      return ip_match(ix, r.has_source_ip, r.source_ip);
    case Attr::kRemoteIp:
      return ip_match(ix, r.has_remote_ip, r.remote_ip);
    case Attr::kDestinationIp:
      return ip_match(ix, r.has_destination_ip, r.destination_ip);
    case Attr::kRequestPrincipal:
      return jwt_visible && r.jwt && request_principal_match(ix, r);
    case Attr::kAudiences:
    case Attr::kPresenter:
    case Attr::kClaim:
      return jwt_visible && r.jwt && claim_match(p, r);
    case Attr::kHost:
      return r.has_host && (ix.present || string_match(ix, r.host, r.host_hash));
    case Attr::kMethod:
      return r.request->method &&
             (ix.present || string_match(ix, *r.request->method, r.method_hash));
    case Attr::kPath:
      return path_match(ix, r);
    case Attr::kHeader:
      return header_match(p, r);
    case Attr::kPort:
      for (int port : ix.ports) {
        if (port == r.port_number) return true;
      }
      return false;
    case Attr::kSni:
      return r.request->sni && string_match(ix, *r.request->sni);
    case Attr::kMetadata:
      return metadata_match(p, r);
  }
  return false;
}

bool side_matches(const std::vector<compile::Conjunction>& side, const PreparedRequest& r,
                  bool jwt_visible) {
  for (const auto& c : side) {
    if (conj_matches(c, r, jwt_visible)) return true;
  }
  return false;
}

}  // namespace detail

bool rule_matches(const TableRule& rule, const PreparedRequest& r, bool custom_stage) {
  if (rule.tcp_dropped && !r.http) return false;
  // A pure AND: the principals usually differ from rule to rule, so they go first.
  return side_matches(rule.principals, r, !custom_stage) &&
         side_matches(rule.permissions, r, !custom_stage);
}

Decision evaluate(const compile::DecisionTable& t, const PreparedRequest& r) {
  Decision d;
  if (!t.audit.empty()) d.audit = first_match(t.audit, r, false);
  if (!t.dry_run_deny.empty() || t.has_dry_run_allow) {
    d.dry_run_evaluated = true;
    d.dry_run_rule = first_match(t.dry_run_deny, r, false);
    if (d.dry_run_rule != nullptr) {
      d.dry_run_allowed = false;
    } else if (t.has_dry_run_allow) {
      d.dry_run_rule = first_match(t.dry_run_allow, r, false);
      d.dry_run_allowed = d.dry_run_rule != nullptr;
    }
  }
  if (r.rejected) {
    d.allowed = false;
    d.cause = Cause::kRejected;
    return d;
  }
  for (const auto& stage : t.custom) {
    if (!r.http && stage.type == "http") continue;  // an HTTP ext_authz is not on TCP chains
    const TableRule* m = first_match(stage.rules, r, true);
    if (m == nullptr) continue;
    d.rule = m;
    d.stage = &stage;
    if (stage.deny_on_match) {
      d.cause = Cause::kBadCustom;
      return d;
    }
    const Request& req = *r.request;
    auto it = req.ext_authz_by_provider.find(stage.provider);
    const std::string* answer = it != req.ext_authz_by_provider.end() ? &it->second
                                : req.ext_authz_default               ? &*req.ext_authz_default
                                                                      : nullptr;
    if (answer == nullptr) {
      d.cause = Cause::kCustomNoAnswer;
      return d;
    }
    if (*answer == "DENY") {
      d.cause = Cause::kCustomDenied;
      return d;
    }
    d.rule = nullptr;
    d.stage = nullptr;
  }
  if (const TableRule* m = first_match(t.deny, r, false)) {
    d.cause = Cause::kDenyMatched;
    d.rule = m;
    return d;
  }
  if (!t.has_allow) {
    d.allowed = true;
    d.cause = Cause::kNoAllowPolicy;
    return d;
  }
  if (const TableRule* m = first_match(t.allow, r, false)) {
    d.allowed = true;
    d.cause = Cause::kAllowMatched;
    d.rule = m;
    return d;
  }
  d.cause = Cause::kNoAllowMatched;
  return d;
}

Decision evaluate(const compile::DecisionTable& t, const Request& req) {
  PreparedRequest r;
  prepare(req, t.path_normalization, r);
  return evaluate(t, r);
}

}  // namespace tollgate::eval

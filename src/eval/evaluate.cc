// Matching a prepared request against a decision table.
#include "tollgate/eval/evaluate.h"

#include <optional>
#include <string_view>

#include "tollgate/util/json_text.h"

namespace tollgate::eval {
namespace {

using compile::Predicate;
using compile::TableRule;
using compile::ValueIndex;
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
    std::string_view key = path.substr(start, z == std::string_view::npos ? path.npos : z - start);
    auto it = cur->find(key);
    if (it == cur->end()) return nullptr;
    cur = &*it;
    if (z == std::string_view::npos) return cur;
    start = z + 1;
  }
}

const std::string* header(const PreparedRequest& r, std::string_view name) {
  for (const auto& [n, v] : r.request->headers) {
    if (n == name) return &v;
  }
  return nullptr;
}

// Does any of the predicate's values match the request? (Before `negate` is applied.)
bool some_value_matches(const Predicate& p, const PreparedRequest& r, bool jwt_visible) {
  const ValueIndex& ix = p.index;
  switch (p.attr) {
    case Attr::kSourcePrincipal:
      return r.peer && string_match(ix, r.principal, r.principal_hash);
    case Attr::kSourceNamespace: {
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
    case Attr::kSourceServiceAccount:
      if (!r.peer) return false;
      for (const auto& [ns, sa] : ix.service_accounts) {
        if (service_account_match(r.uri, ns, sa)) return true;
      }
      return false;
    case Attr::kSourceTrustDomain:
      if (!r.peer) return false;
      if (ix.any_nonempty) return true;
      if (!r.trust_domain.empty() && ix.exact.contains(r.trust_domain, r.trust_domain_hash))
        return true;
      for (const auto& g : ix.globs) {
        if (g.matches(r.principal)) return true;
      }
      return false;
    case Attr::kSourceIp:
      return ip_match(ix, r.has_source_ip, r.source_ip);
    case Attr::kRemoteIp:
      return ip_match(ix, r.has_remote_ip, r.remote_ip);
    case Attr::kDestinationIp:
      return ip_match(ix, r.has_destination_ip, r.destination_ip);
    case Attr::kRequestPrincipal:
      if (!jwt_visible || !r.jwt) return false;
      if (!r.iss_sub_key.empty() || (r.iss != nullptr && r.sub != nullptr)) {
        if (ix.exact.contains(r.iss_sub_key, r.iss_sub_hash)) return true;
      }
      for (const auto& m : ix.iss_sub) {
        if (kind_match(m.iss_kind, m.iss, r.iss) && kind_match(m.sub_kind, m.sub, r.sub)) {
          return true;
        }
      }
      return false;
    case Attr::kAudiences:
    case Attr::kPresenter:
    case Attr::kClaim: {
      if (!jwt_visible || !r.jwt || !r.request->jwt_claims.is_object()) return false;
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
      return claim_value_match(ix, *v, split);
    }
    case Attr::kHost:
      if (!r.has_host) return false;
      return ix.present || string_match(ix, r.host, r.host_hash);
    case Attr::kMethod:
      if (!r.request->method) return false;
      return ix.present || string_match(ix, *r.request->method, r.method_hash);
    case Attr::kPath:
      if (!r.has_path) return false;
      if (string_match(ix, r.path, r.path_hash)) return true;
      for (const auto& t : ix.templates) {
        if (t.matches(r.path)) return true;
      }
      return false;
    case Attr::kHeader: {
      const std::string* v = nullptr;
      std::string_view name = p.arg;
      std::string pseudo;
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
      return ix.present || string_match(ix, *v);
    }
    case Attr::kPort:
      for (int port : ix.ports) {
        if (port == r.port_number) return true;
      }
      return false;
    case Attr::kSni:
      return r.request->sni && string_match(ix, *r.request->sni);
    case Attr::kMetadata: {
      const json& md = r.request->dynamic_metadata;
      if (!md.is_object()) return false;
      std::string_view arg = p.arg;
      const auto z = arg.find('\0');
      auto f = md.find(arg.substr(0, z));
      if (f == md.end() || !f->is_object()) return false;
      auto v = f->find(arg.substr(z + 1));
      if (v == f->end()) return false;
      if (v->is_string()) return string_match(ix, v->get_ref<const std::string&>());
      if (v->is_array()) {
        for (const auto& e : *v) {
          if (!e.is_string()) continue;
          for (const auto& lv : ix.list_values) {
            if (pattern_match(lv, e.get_ref<const std::string&>())) return true;
          }
        }
      }
      return false;
    }
  }
  return false;
}

bool conj_matches(const compile::Conjunction& c, const PreparedRequest& r, bool jwt_visible) {
  for (const auto& p : c.all) {
    if (p.http_only && !r.http) continue;  // not generated on a TCP chain
    if (some_value_matches(p, r, jwt_visible) == p.negate) return false;
  }
  return true;
}

bool side_matches(const std::vector<compile::Conjunction>& side, const PreparedRequest& r,
                  bool jwt_visible) {
  for (const auto& c : side) {
    if (conj_matches(c, r, jwt_visible)) return true;
  }
  return false;
}

const TableRule* first_match(const std::vector<TableRule>& rules, const PreparedRequest& r,
                             bool custom_stage) {
  for (const auto& rule : rules) {
    if (rule_matches(rule, r, custom_stage)) return &rule;
  }
  return nullptr;
}

}  // namespace

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

namespace {

// The request's value of an attribute, as a person would write it; nullopt when absent.
std::optional<std::string> attribute_text(const Predicate& p, const PreparedRequest& r,
                                          bool jwt_visible) {
  auto quoted = [](std::string_view v) { return "\"" + std::string(v) + "\""; };
  switch (p.attr) {
    case Attr::kSourcePrincipal:
    case Attr::kSourceNamespace:
    case Attr::kSourceServiceAccount:
    case Attr::kSourceTrustDomain:
      if (!r.peer) return std::nullopt;
      return "peer " + quoted(r.principal);
    case Attr::kSourceIp:
      return r.request->source_ip ? std::optional(quoted(*r.request->source_ip)) : std::nullopt;
    case Attr::kRemoteIp:
      return r.request->remote_ip ? std::optional(quoted(*r.request->remote_ip)) : std::nullopt;
    case Attr::kDestinationIp:
      return r.request->destination_ip ? std::optional(quoted(*r.request->destination_ip))
                                       : std::nullopt;
    case Attr::kRequestPrincipal:
    case Attr::kAudiences:
    case Attr::kPresenter:
    case Attr::kClaim:
      if (!jwt_visible) return std::nullopt;
      if (!r.jwt) return std::nullopt;
      if (p.attr == Attr::kRequestPrincipal && r.iss != nullptr) {
        return quoted(*r.iss + "/" + (r.sub != nullptr ? *r.sub : ""));
      }
      return std::string("the JWT's claims");
    case Attr::kHost:
      return r.has_host ? std::optional(quoted(r.host)) : std::nullopt;
    case Attr::kMethod:
      return r.request->method ? std::optional(quoted(*r.request->method)) : std::nullopt;
    case Attr::kPath:
      return r.has_path ? std::optional(quoted(r.path)) : std::nullopt;
    case Attr::kPort:
      return r.port.empty() ? std::nullopt : std::optional(r.port);
    case Attr::kHeader: {
      const std::string* v = header(r, p.arg);
      return v != nullptr ? std::optional(quoted(*v)) : std::nullopt;
    }
    case Attr::kSni:
      return r.request->sni ? std::optional(quoted(*r.request->sni)) : std::nullopt;
    case Attr::kMetadata:
      return std::string("the dynamic metadata");
  }
  return std::nullopt;
}

std::string predicate_name(const Predicate& p) {
  std::string n = policy::attr_name(p.attr);
  if (p.attr == Attr::kHeader) n += "[" + p.arg + "]";
  if (p.attr == Attr::kClaim || p.attr == Attr::kMetadata) {
    std::string arg = p.arg;
    for (char& c : arg) {
      if (c == '\0') c = '.';
    }
    n += "[" + arg + "]";
  }
  return n;
}

std::string values_text(const Predicate& p) {
  std::string s = "[";
  for (std::size_t i = 0; i < p.values.size() && i < 5; ++i) s += (i ? ", " : "") + p.values[i];
  if (p.values.size() > 5) s += ", ... " + std::to_string(p.values.size() - 5) + " more";
  return s + "]";
}

std::string conj_mismatch(const compile::Conjunction& c, const PreparedRequest& r,
                          bool jwt_visible) {
  std::string out;
  for (const auto& p : c.all) {
    if (p.http_only && !r.http) continue;
    if (some_value_matches(p, r, jwt_visible) != p.negate) continue;
    const auto have = attribute_text(p, r, jwt_visible);
    std::string s = predicate_name(p) + " is " + (have ? *have : std::string("absent"));
    s += p.negate ? ", which is excluded by " : ", not one of ";
    s += values_text(p);
    out += (out.empty() ? "" : "; ") + s;
  }
  return out;
}

std::string side_mismatch(const std::vector<compile::Conjunction>& side, const char* what,
                          const PreparedRequest& r, bool jwt_visible) {
  if (side_matches(side, r, jwt_visible)) return "";
  if (side.size() == 1) return conj_mismatch(side[0], r, jwt_visible);
  std::string out = std::string("no ") + what + " entry matched: ";
  for (std::size_t i = 0; i < side.size() && i < 3; ++i) {
    out += (i ? " | " : "") + conj_mismatch(side[i], r, jwt_visible);
  }
  return out;
}

}  // namespace

std::string mismatch(const TableRule& rule, const PreparedRequest& r, bool custom_stage) {
  if (rule.tcp_dropped && !r.http) {
    return "it uses HTTP-only fields, so Istio does not generate it for TCP traffic";
  }
  std::string to = side_mismatch(rule.permissions, "to", r, !custom_stage);
  std::string from = side_mismatch(rule.principals, "from", r, !custom_stage);
  if (to.empty()) return from;
  if (from.empty()) return to;
  return from + "; " + to;
}

std::string reason(const compile::DecisionTable& t, const Decision& d, const PreparedRequest& r) {
  // Every Cause that names a rule has d.rule set; a null rule still gets a sentence, never a crash.
  auto rule_text = [&](const TableRule* matched) {
    if (matched == nullptr) return std::string("a rule matched");
    const TableRule& rule = *matched;
    std::string s = std::string(policy::action_name(rule.action)) + " policy " + rule.policy +
                    " rule " + std::to_string(rule.rule) + " matched";
    if (rule.empty_rule()) {
      s += " (an empty rule matches every request)";
    } else if (!r.http && rule.action != policy::Action::kAllow) {
      bool widened = false;
      for (const auto* side : {&rule.principals, &rule.permissions}) {
        for (const auto& c : *side) {
          for (const auto& p : c.all) widened = widened || p.http_only;
        }
      }
      if (widened) {
        s += " (on TCP its HTTP-only fields are ignored, which widens the rule)";
      }
    }
    return s;
  };
  static const std::string kUnknownProvider = "(unknown)";
  static const std::string kInvalidRule = "the rule is invalid";
  const std::string& provider = d.stage != nullptr ? d.stage->provider : kUnknownProvider;
  const std::string& deny_reason = d.stage != nullptr ? d.stage->deny_reason : kInvalidRule;
  switch (d.cause) {
    case Cause::kRejected:
      return "request rejected before authorization: " + *r.rejected;
    case Cause::kCustomDenied:
      return rule_text(d.rule) + "; its provider " + provider + " denied the request";
    case Cause::kCustomNoAnswer:
      return rule_text(d.rule) + "; provider " + provider +
             " must decide, and no answer was given (extAuthzDecision): denied, failing closed";
    case Cause::kBadCustom:
      return rule_text(d.rule) + "; denied because " + deny_reason +
             " (Istio turns such CUSTOM rules into DENY rules)";
    case Cause::kDenyMatched: {
      std::string s = rule_text(d.rule);
      if (t.has_allow) s += "; DENY is evaluated before ALLOW, so no ALLOW policy can override it";
      return s;
    }
    case Cause::kNoAllowPolicy:
      return "no ALLOW policy applies to the workload: allowed by default";
    case Cause::kAllowMatched:
      return rule_text(d.rule);
    case Cause::kNoAllowMatched: {
      std::string names;
      int dropped = 0;
      for (const auto& rule : t.allow) {
        if (rule.tcp_dropped) ++dropped;
      }
      std::string s =
          "ALLOW policies apply to the workload but no ALLOW rule matched: denied by "
          "default";
      if (t.allow.empty())
        s = "ALLOW policies apply to the workload but have no rule that can "
            "match: denied (an ALLOW policy without rules allows nothing)";
      if (!r.http && dropped > 0) {
        s += " (" + std::to_string(dropped) +
             " ALLOW rule(s) use HTTP-only fields and never match TCP traffic)";
      }
      return s;
    }
  }
  return "";
}

json decision_json(const compile::DecisionTable& t, const Decision& d, const PreparedRequest& r) {
  json j;
  j["decision"] = d.allowed ? "ALLOW" : "DENY";
  if (d.rule != nullptr) {
    j["policy"] = d.rule->policy;
    j["action"] = policy::action_name(d.rule->action);
    j["rule"] = d.rule->rule;
  } else {
    j["policy"] = nullptr;
    j["action"] = nullptr;
    j["rule"] = nullptr;
  }
  j["reason"] = reason(t, d, r);
  if (d.audit != nullptr) j["audit"] = {{"policy", d.audit->policy}, {"rule", d.audit->rule}};
  if (d.dry_run_evaluated) {
    json dr;
    dr["decision"] = d.dry_run_allowed ? "ALLOW" : "DENY";
    if (d.dry_run_rule != nullptr) {
      dr["policy"] = d.dry_run_rule->policy;
      dr["rule"] = d.dry_run_rule->rule;
    } else {
      dr["policy"] = nullptr;
      dr["rule"] = nullptr;
    }
    j["dryRun"] = std::move(dr);
  }
  return j;
}

namespace {

// Writes a JSON string as nlohmann's dump() does; false if it needs nlohmann (non-ASCII, which
// nlohmann validates as UTF-8 and the caller then words through it).
bool append_string(std::string& out, std::string_view s) {
  if (!util::is_ascii(s)) return false;
  util::append_json_string(out, s);
  return true;
}

}  // namespace

void append_decision_json(std::string& out, const compile::DecisionTable& t, const Decision& d,
                          const PreparedRequest& r) {
  const std::size_t mark = out.size();
  bool ok = true;
  // Keys in nlohmann's (sorted) order: action, audit, decision, dryRun, policy, reason, rule.
  out += "{\"action\":";
  if (d.rule != nullptr) {
    ok = append_string(out, policy::action_name(d.rule->action)) && ok;
  } else {
    out += "null";
  }
  if (d.audit != nullptr) {
    out += ",\"audit\":{\"policy\":";
    ok = append_string(out, d.audit->policy) && ok;
    out += ",\"rule\":" + std::to_string(d.audit->rule) + "}";
  }
  out += d.allowed ? ",\"decision\":\"ALLOW\"" : ",\"decision\":\"DENY\"";
  if (d.dry_run_evaluated) {
    out += d.dry_run_allowed ? ",\"dryRun\":{\"decision\":\"ALLOW\",\"policy\":"
                             : ",\"dryRun\":{\"decision\":\"DENY\",\"policy\":";
    if (d.dry_run_rule != nullptr) {
      ok = append_string(out, d.dry_run_rule->policy) && ok;
      out += ",\"rule\":" + std::to_string(d.dry_run_rule->rule) + "}";
    } else {
      out += "null,\"rule\":null}";
    }
  }
  out += ",\"policy\":";
  if (d.rule != nullptr) {
    ok = append_string(out, d.rule->policy) && ok;
  } else {
    out += "null";
  }
  out += ",\"reason\":";
  ok = append_string(out, reason(t, d, r)) && ok;
  out += ",\"rule\":";
  out += d.rule != nullptr ? std::to_string(d.rule->rule) : "null";
  out += "}";
  if (!ok) {  // non-ASCII text: let nlohmann write it
    out.resize(mark);
    out += decision_json(t, d, r).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
}

}  // namespace tollgate::eval

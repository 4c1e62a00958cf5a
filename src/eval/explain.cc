// Explaining a decision for people: why a rule does not match, the reason sentence, and the
// decision as JSON (the functions declared last in tollgate/eval/evaluate.h).
#include <optional>
#include <string_view>

#include "match.h"
#include "tollgate/eval/evaluate.h"
#include "tollgate/util/json_text.h"

namespace tollgate::eval {

using compile::Predicate;
using compile::TableRule;
using detail::header;
using detail::side_matches;
using detail::some_value_matches;
using nlohmann::json;
using policy::Attr;

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

// AuthorizationPolicy JSON -> model. Every problem becomes a Finding with a field path; the
// model is then shaped so that compilation fails closed
// (docs/semantics.md#where-tollgate-fails-closed).
#include <string>
#include <utility>

#include "tollgate/policy/parse.h"
#include "tollgate/policy/values.h"

namespace tollgate::policy {
namespace {

using nlohmann::json;

std::string type_name(const json& j) {
  switch (j.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::object:
      return "an object";
    case json::value_t::array:
      return "a list";
    case json::value_t::string:
      return "a string";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float:
      return "a number";
    default:
      return "an unsupported value";
  }
}

std::string quote(const std::string& s) { return json(s).dump(); }

struct SourceField {
  const char* name;
  const char* not_name;
  Attr attr;
};
constexpr SourceField kSourceFields[] = {
    {"principals", "notPrincipals", Attr::kSourcePrincipal},
    {"requestPrincipals", "notRequestPrincipals", Attr::kRequestPrincipal},
    {"namespaces", "notNamespaces", Attr::kSourceNamespace},
    {"ipBlocks", "notIpBlocks", Attr::kSourceIp},
    {"remoteIpBlocks", "notRemoteIpBlocks", Attr::kRemoteIp},
    {"serviceAccounts", "notServiceAccounts", Attr::kSourceServiceAccount},
    {"trustDomains", "notTrustDomains", Attr::kSourceTrustDomain},
};
constexpr SourceField kOperationFields[] = {
    {"hosts", "notHosts", Attr::kHost},
    {"ports", "notPorts", Attr::kPort},
    {"methods", "notMethods", Attr::kMethod},
    {"paths", "notPaths", Attr::kPath},
};

class Parser {
 public:
  explicit Parser(Policy& p) : p_(p) {}

  void add(Finding::Severity sev, const char* code, std::string path, std::string message) {
    p_.findings.push_back(Finding{sev, code, p_.key(), std::move(path), std::move(message)});
  }
  void error(std::string path, std::string message, const char* code = "TG001") {
    add(Finding::Severity::kError, code, std::move(path), std::move(message));
  }
  void unknown_field(const std::string& path, const std::string& key) {
    add(Finding::Severity::kWarning, "TG002", path.empty() ? key : path + "." + key,
        "unknown field " + quote(key) + " is ignored");
  }

  // A list of strings. Returns the count of elements that were not strings (ports may be
  // numbers, as YAML users write them).
  int string_list(const json& j, const std::string& path, std::vector<std::string>& out,
                  bool numbers_ok) {
    if (j.is_null()) return 0;
    if (!j.is_array()) {
      error(path, "must be a list of strings, not " + type_name(j));
      return 1;
    }
    int bad = 0;
    for (std::size_t i = 0; i < j.size(); ++i) {
      const json& e = j[i];
      if (e.is_string()) {
        out.push_back(e.get<std::string>());
      } else if (numbers_ok && (e.is_number_integer() || e.is_number_unsigned())) {
        out.push_back(e.dump());
      } else {
        error(path + "[" + std::to_string(i) + "]", "must be a string, not " + type_name(e));
        ++bad;
      }
    }
    return bad;
  }

  void check_values(const Match& m) {
    auto check = [&](const std::vector<std::string>& vals, const std::string& path) {
      for (std::size_t i = 0; i < vals.size(); ++i) {
        auto r = check_value(m.attr, vals[i]);
        if (!r.ok()) {
          error(path + "[" + std::to_string(i) + "]", quote(vals[i]) + " " + r.error().message,
                "TG003");
        }
      }
    };
    check(m.values, m.values_path);
    check(m.not_values, m.not_values_path);
  }

  // Parses `source` or `operation`.
  Clause clause(const json& j, const std::string& path, const SourceField* fields,
                std::size_t nfields, bool& malformed) {
    Clause c;
    if (j.is_null()) {
      error(path, "must be set", "TG003");
      return c;
    }
    if (!j.is_object()) {
      error(path, "must be an object, not " + type_name(j));
      malformed = true;
      return c;
    }
    for (const auto& [key, val] : j.items()) {
      bool known = false;
      for (std::size_t f = 0; f < nfields; ++f) {
        if (key == fields[f].name || key == fields[f].not_name) known = true;
      }
      if (!known) unknown_field(path, key);
    }
    for (std::size_t f = 0; f < nfields; ++f) {
      const SourceField& sf = fields[f];
      auto it = j.find(sf.name);
      auto nit = j.find(sf.not_name);
      if (it == j.end() && nit == j.end()) continue;
      Match m;
      m.attr = sf.attr;
      m.values_path = path + "." + sf.name;
      m.not_values_path = path + "." + sf.not_name;
      const bool ports = sf.attr == Attr::kPort;
      if (it != j.end()) m.bad_values = string_list(*it, m.values_path, m.values, ports);
      if (nit != j.end()) {
        m.bad_not_values = string_list(*nit, m.not_values_path, m.not_values, ports);
      }
      if (m.values.empty() && m.not_values.empty() && m.bad_values == 0 && m.bad_not_values == 0) {
        continue;  // an empty list is the same as no list
      }
      check_values(m);
      c.matches.push_back(std::move(m));
    }
    if (c.matches.empty() && !malformed) {
      add(Finding::Severity::kWarning, "TG004", path,
          "is empty: it places no condition (Istio's validation rejects an empty " +
              std::string(fields == kSourceFields ? "source" : "operation") + ")");
    }
    bool has_sa = false;
    bool has_principal_or_ns = false;
    for (const Match& m : c.matches) {
      if (m.attr == Attr::kSourceServiceAccount) has_sa = true;
      if (m.attr == Attr::kSourcePrincipal || m.attr == Attr::kSourceNamespace) {
        has_principal_or_ns = true;
      }
    }
    if (has_sa && has_principal_or_ns) {
      error(path, "serviceAccounts cannot be combined with principals or namespaces", "TG003");
    }
    return c;
  }

  // Calls fn(element_path, element) for each element of the list `j` at `path`. Null is an
  // empty list; a value that is not a list, or an element that is not an object, is an error
  // that marks the rule malformed.
  template <typename Fn>
  void each_object(const json& j, const std::string& path, Rule& rule, Fn fn) {
    if (j.is_null()) return;
    if (!j.is_array()) {
      error(path, "must be a list, not " + type_name(j));
      rule.malformed = true;
      return;
    }
    for (std::size_t i = 0; i < j.size(); ++i) {
      const std::string ep = path + "[" + std::to_string(i) + "]";
      const json& e = j[i];
      if (!e.is_object()) {
        error(ep, "must be an object, not " + type_name(e));
        rule.malformed = true;
        continue;
      }
      fn(ep, e);
    }
  }

  void entries(const json& j, const std::string& path, const char* inner, const SourceField* fields,
               std::size_t nfields, std::vector<Clause>& out, Rule& rule) {
    each_object(j, path, rule, [&](const std::string& ep, const json& e) {
      for (const auto& [key, val] : e.items()) {
        if (key != inner) unknown_field(ep, key);
      }
      auto it = e.find(inner);
      out.push_back(
          clause(it == e.end() ? json() : *it, ep + "." + inner, fields, nfields, rule.malformed));
    });
  }

  void when(const json& j, const std::string& path, Rule& rule) {
    each_object(j, path, rule,
                [&](const std::string& cp, const json& c) { condition(cp, c, rule); });
  }

  // One `when` condition: a key and its values or notValues.
  void condition(const std::string& cp, const json& c, Rule& rule) {
    for (const auto& [key, val] : c.items()) {
      if (key != "key" && key != "values" && key != "notValues") unknown_field(cp, key);
    }
    auto kit = c.find("key");
    if (kit == c.end() || !kit->is_string()) {
      error(cp + ".key", kit == c.end() ? "is required" : "must be a string");
      rule.invalid_reason = "condition " + cp + " has no valid key";
      return;
    }
    const std::string key = kit->get<std::string>();
    auto wk = parse_when_key(key);
    if (!wk.ok()) {
      error(cp + ".key", quote(key) + " " + wk.error().message, "TG005");
      rule.invalid_reason = "unknown condition key " + quote(key);
      return;
    }
    Match m;
    m.attr = wk->attr;
    m.arg = wk->arg;
    m.values_path = cp + ".values";
    m.not_values_path = cp + ".notValues";
    const bool ports = m.attr == Attr::kPort;
    if (auto it = c.find("values"); it != c.end()) {
      m.bad_values = string_list(*it, m.values_path, m.values, ports);
    }
    if (auto it = c.find("notValues"); it != c.end()) {
      m.bad_not_values = string_list(*it, m.not_values_path, m.not_values, ports);
    }
    if (m.values.empty() && m.not_values.empty() && m.bad_values == 0 && m.bad_not_values == 0) {
      error(cp, "needs values or notValues", "TG003");
    }
    if (wk->malformed) {
      // A known key with a malformed [name]: every value fails to translate.
      error(cp + ".key", quote(key) + " " + *wk->malformed, "TG003");
      m.bad_values += static_cast<int>(m.values.size());
      m.bad_not_values += static_cast<int>(m.not_values.size());
      m.values.clear();
      m.not_values.clear();
    }
    check_values(m);
    rule.when.push_back(std::move(m));
  }

  Rule rule(const json& j, const std::string& path) {
    Rule r;
    if (j.is_null()) {
      r.null_rule = true;
      add(Finding::Severity::kWarning, "TG006", path, "is null: Istio skips it");
      return r;
    }
    if (!j.is_object()) {
      error(path, "must be an object, not " + type_name(j));
      r.malformed = true;
      return r;
    }
    for (const auto& [key, val] : j.items()) {
      if (key != "from" && key != "to" && key != "when") unknown_field(path, key);
    }
    if (auto it = j.find("from"); it != j.end()) {
      entries(*it, path + ".from", "source", kSourceFields, std::size(kSourceFields), r.from, r);
    }
    if (auto it = j.find("to"); it != j.end()) {
      entries(*it, path + ".to", "operation", kOperationFields, std::size(kOperationFields), r.to,
              r);
    }
    if (auto it = j.find("when"); it != j.end()) when(*it, path + ".when", r);
    return r;
  }

  void selector(const json& j) {
    if (j.is_null()) return;
    if (!j.is_object()) {
      error("spec.selector", "must be an object, not " + type_name(j) +
                                 "; the policy is applied to every workload of its namespace");
      p_.selector.emplace();
      return;
    }
    p_.selector.emplace();
    for (const auto& [key, val] : j.items()) {
      if (key != "matchLabels") unknown_field("spec.selector", key);
    }
    auto it = j.find("matchLabels");
    if (it == j.end() || it->is_null()) return;
    if (!it->is_object()) {
      error("spec.selector.matchLabels",
            "must be a map of strings, not " + type_name(*it) +
                "; the policy is applied to every workload of its namespace");
      return;
    }
    bool bad = false;
    for (const auto& [key, val] : it->items()) {
      if (!val.is_string()) {
        error("spec.selector.matchLabels." + key, "must be a string, not " + type_name(val));
        bad = true;
        continue;
      }
      (*p_.selector)[key] = val.get<std::string>();
    }
    if (bad) {
      // Fail closed: a selector we cannot read selects every workload of the namespace.
      p_.selector->clear();
    }
  }

  void target_ref(const json& j, const std::string& path) {
    TargetRef t;
    if (!j.is_object()) {
      error(path, "must be an object, not " + type_name(j));
    } else {
      auto str = [&](const char* k) {
        auto it = j.find(k);
        return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
      };
      t.group = str("group");
      t.kind = str("kind");
      t.name = str("name");
      t.namespace_ = str("namespace");
    }
    p_.target_refs.push_back(std::move(t));
  }

  void spec(const json& s) {
    for (const auto& [key, val] : s.items()) {
      if (key != "selector" && key != "targetRef" && key != "targetRefs" && key != "action" &&
          key != "provider" && key != "rules") {
        unknown_field("spec", key);
      }
    }
    spec_scope(s);
    spec_action(s);
    spec_provider(s);
    if (auto it = s.find("rules"); it != s.end() && !it->is_null()) spec_rules(*it);
  }

  // selector, targetRef or targetRefs: at most one.
  void spec_scope(const json& s) {
    int scopes = 0;
    if (auto it = s.find("selector"); it != s.end() && !it->is_null()) {
      ++scopes;
      selector(*it);
    }
    if (auto it = s.find("targetRef"); it != s.end() && !it->is_null()) {
      ++scopes;
      target_ref(*it, "spec.targetRef");
    }
    if (auto it = s.find("targetRefs"); it != s.end() && !it->is_null()) {
      ++scopes;
      if (!it->is_array()) {
        error("spec.targetRefs", "must be a list, not " + type_name(*it));
        p_.target_refs.emplace_back();
      } else {
        for (std::size_t i = 0; i < it->size(); ++i) {
          target_ref((*it)[i], "spec.targetRefs[" + std::to_string(i) + "]");
        }
      }
    }
    if (scopes > 1) {
      error("spec", "only one of selector, targetRef and targetRefs may be set", "TG003");
    }
  }

  void spec_action(const json& s) {
    p_.action = Action::kAllow;
    p_.action_text = "ALLOW";
    auto it = s.find("action");
    if (it == s.end() || it->is_null()) return;
    if (!it->is_string()) {
      error("spec.action", "must be a string, not " + type_name(*it));
      p_.action = Action::kUnknown;
      p_.action_text = it->dump();
      return;
    }
    p_.action_text = it->get<std::string>();
    p_.action = parse_action(p_.action_text);
    if (p_.action == Action::kUnknown) {
      error("spec.action",
            quote(p_.action_text) +
                " is not an action (ALLOW, DENY, AUDIT, CUSTOM); Istio ignores this policy");
    }
  }

  // spec.provider, and whether the action wants one.
  void spec_provider(const json& s) {
    if (auto it = s.find("provider"); it != s.end() && !it->is_null()) {
      if (!it->is_object()) {
        error("spec.provider", "must be an object, not " + type_name(*it));
      } else {
        for (const auto& [key, val] : it->items()) {
          if (key != "name") unknown_field("spec.provider", key);
        }
        auto nit = it->find("name");
        if (nit != it->end() && nit->is_string()) {
          p_.provider = nit->get<std::string>();
        } else {
          error("spec.provider.name", "must be a string");
        }
      }
    }
    if (p_.action == Action::kCustom && p_.provider.empty()) {
      error("spec.provider", "CUSTOM action needs a provider; its rules deny what they match",
            "TG003");
    }
    if (p_.action != Action::kCustom && p_.action != Action::kUnknown && !p_.provider.empty()) {
      error("spec.provider", "provider is only allowed with the CUSTOM action", "TG003");
    }
  }

  void spec_rules(const json& list) {
    if (!list.is_array()) {
      // Fail closed: an ALLOW policy allows nothing; a DENY policy denies everything.
      error("spec.rules", "must be a list, not " + type_name(list) +
                              (p_.action == Action::kAllow
                                   ? "; the policy allows nothing"
                                   : "; the policy is treated as matching every request"));
      p_.rules_present = true;
      Rule r;
      r.malformed = true;
      p_.rules.push_back(std::move(r));
      return;
    }
    for (std::size_t i = 0; i < list.size(); ++i) {
      p_.rules.push_back(rule(list[i], "spec.rules[" + std::to_string(i) + "]"));
    }
    p_.rules_present = !p_.rules.empty();
  }

  void object(const json& o) {
    if (auto it = o.find("apiVersion"); it != o.end() && it->is_string()) {
      p_.api_version = it->get<std::string>();
    }
    if (p_.api_version != "security.istio.io/v1" && p_.api_version != "security.istio.io/v1beta1") {
      add(Finding::Severity::kWarning, "TG007", "apiVersion",
          quote(p_.api_version) + " is not security.istio.io/v1 or v1beta1");
    }
    const json* meta = nullptr;
    if (auto it = o.find("metadata"); it != o.end() && it->is_object()) meta = &*it;
    p_.namespace_ = "default";
    if (meta != nullptr) {
      if (auto it = meta->find("name"); it != meta->end() && it->is_string()) {
        p_.name = it->get<std::string>();
      }
      if (auto it = meta->find("namespace");
          it != meta->end() && it->is_string() && !it->get<std::string>().empty()) {
        p_.namespace_ = it->get<std::string>();
      }
      auto ann = meta->find("annotations");
      if (ann != meta->end() && ann->is_object()) {
        auto dr = ann->find("istio.io/dry-run");
        if (dr != ann->end()) {
          p_.dry_run_text = dr->is_string() ? dr->get<std::string>() : dr->dump();
          auto b = parse_go_bool(*p_.dry_run_text);
          if (!b) {
            add(Finding::Severity::kWarning, "TG008", "metadata.annotations[istio.io/dry-run]",
                quote(*p_.dry_run_text) +
                    " is not a boolean; Istio enforces the policy (not dry-run)");
          }
          p_.dry_run = b.value_or(false);
        }
      }
    }
    if (p_.name.empty()) error("metadata.name", "is required");
    auto sit = o.find("spec");
    if (sit == o.end() || sit->is_null()) return;  // spec: {} -> ALLOW with no rules
    if (!sit->is_object()) {
      error("spec", "must be an object, not " + type_name(*sit) + "; the policy allows nothing");
      return;
    }
    spec(*sit);
  }

 private:
  Policy& p_;
};

}  // namespace

bool Policy::has_errors() const {
  for (const Finding& f : findings) {
    if (f.severity == Finding::Severity::kError) return true;
  }
  return false;
}

bool is_authorization_policy(const nlohmann::json& object) {
  if (!object.is_object()) return false;
  auto kind = object.find("kind");
  return kind != object.end() && kind->is_string() &&
         kind->get<std::string>() == "AuthorizationPolicy";
}

Policy parse_policy(const nlohmann::json& object) {
  Policy p;
  Parser parser(p);
  if (!object.is_object()) {
    p.namespace_ = "default";
    parser.error("", "an AuthorizationPolicy must be an object, not " + type_name(object));
    return p;
  }
  parser.object(object);
  return p;
}

std::string policy_fingerprint(const nlohmann::json& object) {
  std::string f = "null";
  if (object.is_object()) {
    if (auto spec = object.find("spec"); spec != object.end()) f = spec->dump();
  }
  f += '\n';
  const auto* meta =
      object.is_object() && object.contains("metadata") ? &object["metadata"] : nullptr;
  if (meta != nullptr && meta->is_object() && meta->contains("annotations")) {
    const auto& a = (*meta)["annotations"];
    if (a.is_object() && a.contains("istio.io/dry-run")) f += a["istio.io/dry-run"].dump();
  }
  return f;
}

nlohmann::json finding_json(const Finding& f) {
  return {{"code", f.code},
          {"severity", severity_name(f.severity)},
          {"object", f.object},
          {"path", f.path},
          {"message", f.message}};
}

}  // namespace tollgate::policy

// Policies -> DecisionTable, after Istio's pilot/pkg/security/authz/{builder,model}.
#include "tollgate/compile/compile.h"
#include "tollgate/util/strings.h"

#include <algorithm>
#include <map>
#include <set>

namespace tollgate::compile {
namespace {

using policy::Action;
using policy::Attr;

constexpr const char* kGatewayNameLabel = "gateway.networking.k8s.io/gateway-name";

std::vector<std::string> mesh_trust_domains(const policy::MeshConfig& mesh) {
  std::vector<std::string> tds{mesh.trust_domain};
  for (const auto& a : mesh.trust_domain_aliases) {
    if (std::find(tds.begin(), tds.end(), a) == tds.end()) tds.push_back(a);
  }
  return tds;
}

// Istio's trust-domain migration of principal values (model.MigrateTrustDomain).
std::vector<std::string> expand_principal(const std::string& v, const policy::MeshConfig& mesh) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (true) {
    std::size_t slash = v.find('/', start);
    parts.push_back(
        v.substr(start, slash == std::string::npos ? std::string::npos : slash - start));
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  if (parts.size() != 5 || parts[0] == "*" || parts[0].empty()) return {v};
  const auto tds = mesh_trust_domains(mesh);
  const std::string& td = parts[0];
  const bool known = td == "cluster.local" || std::find(tds.begin(), tds.end(), td) != tds.end();
  if (!known) return {v};
  const std::string rest = v.substr(td.size());
  std::vector<std::string> out;
  out.reserve(tds.size());
  for (const auto& t : tds) out.push_back(t + rest);
  return out;
}

std::vector<std::string> expand_trust_domain(const std::string& v, const policy::MeshConfig& mesh) {
  auto tds = mesh_trust_domains(mesh);
  if (std::find(tds.begin(), tds.end(), v) != tds.end()) return tds;
  return {v};
}

// Canonical values of one attribute; an error when Istio could not generate the value.
util::Result<std::vector<std::string>> canonical(Attr attr, const std::string& value,
                                                 const policy::Policy& p,
                                                 const policy::MeshConfig& mesh) {
  auto ok = policy::check_value(attr, value);
  if (!ok.ok()) return ok.error();
  switch (attr) {
    case Attr::kSourcePrincipal:
      return expand_principal(value, mesh);
    case Attr::kSourceTrustDomain:
      return expand_trust_domain(value, mesh);
    case Attr::kSourceServiceAccount:
      if (value.find('/') == std::string::npos) return std::vector{p.namespace_ + "/" + value};
      return std::vector{value};
    case Attr::kHost: {
      std::string lower = value;
      util::to_lower(lower);
      return std::vector{lower};
    }
    case Attr::kSourceIp:
    case Attr::kRemoteIp:
    case Attr::kDestinationIp:
      return std::vector{policy::parse_cidr(value)->to_string()};
    case Attr::kPort:
      return std::vector{std::to_string(*policy::parse_port(value))};
    default:
      return std::vector{value};
  }
}

struct RuleBuilder {
  const policy::Policy& p;
  const policy::MeshConfig& mesh;
  Action action;
  bool dropped = false;          // ALLOW: the rule cannot be generated at all
  std::vector<std::string> why;  // reasons for dropped values / rules

  // Appends the predicates of one Match to `out` (0, 1 or 2: values and notValues).
  void add(const policy::Match& m, std::vector<Predicate>& out) {
    add_side(m, m.values, m.bad_values, false, m.values_path, out);
    add_side(m, m.not_values, m.bad_not_values, true, m.not_values_path, out);
  }

  void add_side(const policy::Match& m, const std::vector<std::string>& values, int bad,
                bool negate, const std::string& path, std::vector<Predicate>& out) {
    if (values.empty() && bad == 0) return;
    Predicate pr;
    pr.attr = m.attr;
    pr.arg = m.arg;
    pr.negate = negate;
    pr.http_only = policy::attr_is_http_only(m.attr);
    std::set<std::string> seen;
    int failed = bad;
    for (const auto& v : values) {
      auto c = canonical(m.attr, v, p, mesh);
      if (!c.ok()) {
        ++failed;
        why.push_back(path + ": \"" + v + "\" " + c.error().message);
        continue;
      }
      for (auto& cv : *c) {
        if (seen.insert(cv).second) pr.values.push_back(std::move(cv));
      }
    }
    if (failed > 0 && action == Action::kAllow) {
      dropped = true;  // "result in a smaller allow policy"
      return;
    }
    if (pr.values.empty()) return;  // DENY/AUDIT/CUSTOM: a field of only bad values vanishes
    out.push_back(std::move(pr));
  }
};

std::string rule_name(const policy::Policy& p, std::size_t i) {
  return "ns[" + p.namespace_ + "]-policy[" + p.name + "]-rule[" + std::to_string(i) + "]";
}

// Builds rule i of p; returns false (with a note) when the rule is skipped.
bool build_rule(const policy::Policy& p, std::size_t i, Action action,
                const policy::MeshConfig& mesh, TableRule& out, std::vector<std::string>& notes) {
  const policy::Rule& r = p.rules[i];
  const std::string where = p.key() + " rule " + std::to_string(i);
  if (r.null_rule) return false;
  if (r.invalid_reason) {
    notes.push_back(where + " skipped (Istio skips it for every action): " + *r.invalid_reason);
    return false;
  }
  if (r.malformed && action == Action::kAllow) {
    notes.push_back(where + " dropped: it is malformed, and an ALLOW rule fails closed");
    return false;
  }
  RuleBuilder b{p, mesh, action, false, {}};
  std::vector<Predicate> when_principal, when_permission;
  for (const auto& m : r.when) {
    b.add(m, policy::attr_is_permission(m.attr) ? when_permission : when_principal);
  }
  auto build_side = [&](const std::vector<policy::Clause>& clauses,
                        const std::vector<Predicate>& base, std::vector<Conjunction>& side) {
    for (const auto& c : clauses) {
      Conjunction conj;
      for (const auto& m : c.matches) b.add(m, conj.all);
      conj.all.insert(conj.all.end(), base.begin(), base.end());
      side.push_back(std::move(conj));
    }
    if (clauses.empty()) side.push_back(Conjunction{base});
  };
  build_side(r.from, when_principal, out.principals);
  build_side(r.to, when_permission, out.permissions);
  if (b.dropped) {
    std::string msg = where +
                      " dropped (an ALLOW rule with a value Istio cannot generate allows "
                      "nothing):";
    for (const auto& w : b.why) msg += " " + w + ";";
    msg.pop_back();
    notes.push_back(msg);
    return false;
  }
  for (const auto& w : b.why) {
    notes.push_back(where + ": value ignored, which widens this " +
                    std::string(policy::action_name(action)) + " rule: " + w);
  }
  out.name = rule_name(p, i);
  out.policy = p.key();
  out.rule = static_cast<int>(i);
  out.action = action;
  if (action == Action::kAllow) {
    auto http = [](const std::vector<Conjunction>& side) {
      for (const auto& c : side) {
        for (const auto& pr : c.all) {
          if (pr.http_only) return true;
        }
      }
      return false;
    };
    out.tcp_dropped = http(out.principals) || http(out.permissions);
  }
  return true;
}

void sort_rules(std::vector<TableRule>& rules) {
  std::sort(rules.begin(), rules.end(),
            [](const TableRule& a, const TableRule& b) { return a.name < b.name; });
}

}  // namespace

bool applies_to(const policy::Policy& p, const policy::Workload& w,
                const policy::MeshConfig& mesh) {
  if (p.action == Action::kUnknown) return false;
  const bool root = p.namespace_ == mesh.root_namespace;
  if (!root && p.namespace_ != w.namespace_) return false;
  auto gw = w.labels.find(kGatewayNameLabel);
  if (!p.target_refs.empty()) {
    // Sidecars ignore any policy with a targetRef; a Gateway API gateway attaches by name.
    if (gw == w.labels.end() || p.namespace_ != w.namespace_) return false;
    for (const auto& t : p.target_refs) {
      if (t.group == "gateway.networking.k8s.io" && t.kind == "Gateway" && t.name == gw->second &&
          (t.namespace_.empty() || t.namespace_ == w.namespace_)) {
        return true;
      }
    }
    return false;
  }
  if (!p.selector) return true;
  for (const auto& [k, v] : *p.selector) {
    auto it = w.labels.find(k);
    if (it == w.labels.end() || it->second != v) return false;
  }
  return true;
}

DecisionTable compile_table(std::span<const policy::Policy> policies, const policy::Workload& w,
                            const policy::MeshConfig& mesh) {
  std::vector<const policy::Policy*> ptrs;
  ptrs.reserve(policies.size());
  for (const auto& p : policies) ptrs.push_back(&p);
  return compile_table(std::span<const policy::Policy* const>(ptrs), w, mesh);
}

DecisionTable compile_table(std::span<const policy::Policy* const> policies,
                            const policy::Workload& w, const policy::MeshConfig& mesh) {
  std::vector<const policy::Policy*> applicable;
  for (const policy::Policy* p : policies) {
    if (applies_to(*p, w, mesh)) applicable.push_back(p);
  }
  return compile_selected(applicable, w.namespace_, mesh);
}

namespace {

using CustomRules = std::map<std::string, std::vector<TableRule>>;  // by provider

// Adds policy `p`'s rules to the table's stages; CUSTOM rules are collected by provider.
void add_policy(const policy::Policy& p, const policy::MeshConfig& mesh, DecisionTable& t,
                CustomRules& custom_by_provider) {
  t.policies.push_back(p.key());
  const bool dry = p.dry_run && (p.action == Action::kAllow || p.action == Action::kDeny);
  if (p.action == Action::kAllow) {
    if (dry) {
      t.has_dry_run_allow = true;
    } else {
      t.has_allow = true;
    }
  }
  for (std::size_t i = 0; i < p.rules.size(); ++i) {
    TableRule r;
    if (!build_rule(p, i, p.action, mesh, r, t.notes)) continue;
    switch (p.action) {
      case Action::kAllow:
        (dry ? t.dry_run_allow : t.allow).push_back(std::move(r));
        break;
      case Action::kDeny:
        (dry ? t.dry_run_deny : t.deny).push_back(std::move(r));
        break;
      case Action::kAudit:
        t.audit.push_back(std::move(r));
        break;
      case Action::kCustom:
        custom_by_provider[p.provider].push_back(std::move(r));
        break;
      case Action::kUnknown:
        break;
    }
  }
}

// The CUSTOM stages: one per provider; an unknown provider, or several providers without the
// multi-provider flag, turns the CUSTOM rules into DENY rules (builder.go,
// "deny-due-to-bad-CUSTOM-action").
void add_custom_stages(CustomRules& custom_by_provider, const policy::MeshConfig& mesh,
                       DecisionTable& t) {
  auto provider_type = [&](const std::string& name) -> std::string {
    for (const auto& ep : mesh.extension_providers) {
      if (ep.name == name) return ep.type;
    }
    return "";
  };
  bool all_bad = custom_by_provider.size() > 1 && !mesh.enable_multiple_custom_providers;
  if (!mesh.enable_multiple_custom_providers) {
    for (const auto& [name, rules] : custom_by_provider) {
      if (provider_type(name).empty()) all_bad = true;
    }
  }
  if (all_bad) {
    CustomStage s;
    s.deny_on_match = true;
    s.deny_reason = custom_by_provider.size() > 1
                        ? "several CUSTOM providers on one workload need "
                          "enableMultipleCustomAuthzProviders"
                        : "CUSTOM provider \"" + custom_by_provider.begin()->first +
                              "\" is not defined in the mesh's extensionProviders";
    for (auto& [name, rules] : custom_by_provider) {
      for (auto& r : rules) {
        r.name += "-deny-due-to-bad-CUSTOM-action";
        s.rules.push_back(std::move(r));
      }
    }
    sort_rules(s.rules);
    t.custom.push_back(std::move(s));
    return;
  }
  for (auto& [name, rules] : custom_by_provider) {
    CustomStage s;
    s.provider = name;
    s.type = provider_type(name);
    if (s.type.empty()) {
      s.deny_on_match = true;
      s.deny_reason =
          "CUSTOM provider \"" + name + "\" is not defined in the mesh's extensionProviders";
      for (auto& r : rules) r.name += "-deny-due-to-bad-CUSTOM-action";
    }
    s.rules = std::move(rules);
    sort_rules(s.rules);
    t.custom.push_back(std::move(s));
  }
}

}  // namespace

DecisionTable compile_selected(std::span<const policy::Policy* const> policies,
                               const std::string& ns, const policy::MeshConfig& mesh) {
  TableBuilder b;
  DecisionTable& t = b.draft();
  t.namespace_ = ns;
  t.path_normalization = mesh.path_normalization;
  CustomRules custom_by_provider;
  for (const policy::Policy* p : policies) add_policy(*p, mesh, t, custom_by_provider);
  std::sort(t.policies.begin(), t.policies.end());
  t.policies.erase(std::unique(t.policies.begin(), t.policies.end()), t.policies.end());
  add_custom_stages(custom_by_provider, mesh, t);
  sort_rules(t.deny);
  sort_rules(t.allow);
  sort_rules(t.audit);
  sort_rules(t.dry_run_deny);
  sort_rules(t.dry_run_allow);
  return std::move(b).finish();
}

}  // namespace tollgate::compile

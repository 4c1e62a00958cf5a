#include "tollgate/lint/lint.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <optional>
#include <utility>

#include "tollgate/compile/compile.h"
#include "tollgate/util/strings.h"

namespace tollgate::lint {
namespace {

using compile::applies_to;
using policy::Action;
using policy::Attr;
using policy::Finding;
using Sev = policy::Finding::Severity;

std::string rule_path(std::size_t i) { return "spec.rules[" + std::to_string(i) + "]"; }

bool rule_matches_everything(const policy::Rule& r) {
  return !r.null_rule && !r.invalid_reason && !r.malformed && r.from.empty() && r.to.empty() &&
         r.when.empty();
}

template <typename F>
void for_each_match(const policy::Rule& r, F f) {
  for (const auto& c : r.from) {
    for (const auto& m : c.matches) f(m);
  }
  for (const auto& c : r.to) {
    for (const auto& m : c.matches) f(m);
  }
  for (const auto& m : r.when) f(m);
}

std::string workload_name(const policy::Workload& w) {
  return w.namespace_ + "/" + (w.name.empty() ? "(workload)" : w.name);
}

// Istio's protocol for a Service port: appProtocol, else the name's prefix before '-'.
// Returns the protocol when it is not HTTP (so HTTP-only fields cannot apply), else "".
std::string tcp_protocol(const policy::ServicePort& p) {
  std::string proto = p.app_protocol;
  if (proto.empty()) proto = p.name.substr(0, p.name.find('-'));
  util::to_lower(proto);
  static const char* kTcp[] = {"tcp", "tls", "https", "mongo", "mysql", "redis"};
  for (const char* t : kTcp) {
    if (proto == t) return proto;
  }
  return "";
}

// Workload ports that receive non-HTTP traffic: "port 5432 (service db, port name tcp-pg)".
std::vector<std::pair<int, std::string>> tcp_ports(const policy::Workload& w,
                                                   std::span<const policy::Service> services) {
  std::vector<std::pair<int, std::string>> out;
  for (const auto& svc : services) {
    if (svc.namespace_ != w.namespace_ || svc.selector.empty()) continue;
    bool selects = true;
    for (const auto& [k, v] : svc.selector) {
      auto it = w.labels.find(k);
      selects = selects && it != w.labels.end() && it->second == v;
    }
    if (!selects) continue;
    for (const auto& sp : svc.ports) {
      const std::string proto = tcp_protocol(sp);
      if (proto.empty()) continue;
      int target = sp.port;
      if (!sp.target_port.empty()) {
        if (std::isdigit(static_cast<unsigned char>(sp.target_port[0]))) {
          target = std::atoi(sp.target_port.c_str());
        } else {
          target = -1;
          for (const auto& cp : w.ports) {
            if (cp.name == sp.target_port) target = cp.number;
          }
          if (target < 0) continue;
        }
      }
      out.emplace_back(target, "port " + std::to_string(target) + " (service " + svc.name +
                                   " port " + std::to_string(sp.port) + ", protocol " + proto +
                                   ")");
    }
  }
  return out;
}

struct Linter {
  const policy::Policy& p;
  const Context& c;
  std::vector<Finding> out;

  void add(Sev sev, const char* code, std::string path, std::string msg) {
    out.push_back(Finding{sev, code, p.key(), std::move(path), std::move(msg)});
  }

  // The first rule of a DENY policy that matches every request, if any.
  static std::optional<std::size_t> deny_all_rule(const policy::Policy& d) {
    if (d.dry_run || d.action != Action::kDeny) return std::nullopt;
    for (std::size_t i = 0; i < d.rules.size(); ++i) {
      if (rule_matches_everything(d.rules[i])) return i;
    }
    return std::nullopt;
  }

  // TG101: this ALLOW policy selects a workload that a deny-all DENY policy also selects.
  void tg101_shadowed_by_deny_all() {
    if (p.dry_run || p.action != Action::kAllow) return;
    std::set<const policy::Policy*> reported;
    for (const auto& w : c.workloads) {
      if (!applies_to(p, w, c.mesh)) continue;
      for (const policy::Policy* d : c.policies) {
        const auto rule = deny_all_rule(*d);
        if (!rule || !applies_to(*d, w, c.mesh) || !reported.insert(d).second) continue;
        add(Sev::kError, "TG101", "spec.rules",
            "ALLOW policy " + p.key() + " can never take effect on " + workload_name(w) +
                ": DENY policy " + d->key() + " " + rule_path(*rule) +
                " is an empty rule that matches every request, and DENY is evaluated before "
                "ALLOW. Delete " +
                d->key() +
                " (any ALLOW policy already denies what it does not match) or give its rule "
                "conditions");
      }
    }
  }

  // TG102: a selector (or a namespace) that selects no known workload.
  void tg102_selects_nothing() {
    if (c.workloads.empty() || !p.target_refs.empty()) return;
    for (const auto& w : c.workloads) {
      if (applies_to(p, w, c.mesh)) return;
    }
    add(Sev::kWarning, "TG102", p.selector ? "spec.selector" : "metadata.namespace",
        p.selector ? "selector matches no workload in the given manifests"
                   : "no workload in namespace " + p.namespace_ + " in the given manifests");
  }

  // TG109: targetRefs make sidecars ignore the policy.
  void tg109_target_refs() {
    if (p.target_refs.empty()) return;
    add(Sev::kInfo, "TG109", "spec.targetRefs",
        "a policy with targetRef(s) is ignored by sidecars; it only attaches to Gateway API "
        "gateways");
  }

  // TG107 (DENY/AUDIT/CUSTOM) and TG108 (ALLOW): a policy without rules.
  void tg107_tg108_no_rules() {
    if (p.rules_present) return;
    if (p.action == Action::kAllow) {
      add(Sev::kInfo, "TG108", "spec.rules",
          "ALLOW policy without rules allows nothing: every request to the selected workloads "
          "is denied unless another ALLOW policy matches");
    } else {
      add(Sev::kWarning, "TG107", "spec.rules",
          std::string(policy::action_name(p.action)) +
              " policy without rules never matches (did you mean rules: [{}], which matches "
              "every request?)");
    }
  }

  // TG103: HTTP-only fields in a rule that meets TCP traffic on a selected workload.
  void tg103_http_only_on_tcp(std::size_t i, const policy::Rule& r) {
    bool http_only = false;
    std::set<std::string> rule_ports;
    for_each_match(r, [&](const policy::Match& m) {
      http_only = http_only || policy::attr_is_http_only(m.attr);
      if (m.attr == Attr::kPort) rule_ports.insert(m.values.begin(), m.values.end());
    });
    if (!http_only) return;
    std::set<std::string> hits;
    for (const auto& w : c.workloads) {
      if (!applies_to(p, w, c.mesh)) continue;
      for (const auto& [port, what] : tcp_ports(w, c.services)) {
        if (rule_ports.empty() || rule_ports.contains(std::to_string(port))) {
          hits.insert(workload_name(w) + " " + what);
        }
      }
    }
    if (hits.empty()) return;
    std::string where;
    for (const auto& h : hits) where += (where.empty() ? "" : "; ") + h;
    add(Sev::kWarning, "TG103", rule_path(i),
        "uses HTTP-only fields but meets TCP traffic on " + where +
            (p.action == Action::kAllow
                 ? ": Istio drops this ALLOW rule there, so it never allows those connections"
                 : ": Istio ignores those fields there, so this " +
                       std::string(policy::action_name(p.action)) +
                       " rule matches every such connection its other fields match; scope it "
                       "with ports"));
  }

  // TG105: identities need mTLS.
  void tg105_needs_mtls(std::size_t i, const policy::Rule& r) {
    bool mtls = false;
    for_each_match(r,
                   [&](const policy::Match& m) { mtls = mtls || policy::attr_needs_mtls(m.attr); });
    if (!mtls) return;
    add(Sev::kInfo, "TG105", rule_path(i),
        "principals, namespaces, serviceAccounts and trustDomains come from the peer's mTLS "
        "certificate: plaintext callers have none (an ALLOW on them denies plaintext, a not* "
        "in a DENY matches it); enforce STRICT mTLS with a PeerAuthentication");
  }

  // The service account a principal ("<td>/ns/<ns>/sa/<sa>") or serviceAccounts value names.
  std::optional<std::pair<std::string, std::string>> named_account(Attr attr,
                                                                   const std::string& v) const {
    if (attr == Attr::kSourceServiceAccount) {
      const auto slash = v.find('/');
      if (slash == std::string::npos) return std::pair(p.namespace_, v);
      return std::pair(v.substr(0, slash), v.substr(slash + 1));
    }
    if (attr != Attr::kSourcePrincipal) return std::nullopt;
    const auto parts = util::split(v, '/');
    if (parts.size() != 5 || parts[1] != "ns" || parts[3] != "sa") return std::nullopt;
    return std::pair(std::string(parts[2]), std::string(parts[4]));
  }

  bool account_exists(const std::string& ns, const std::string& sa) const {
    if (sa == "default" || c.service_accounts->contains(ns + "/" + sa)) return true;
    return std::any_of(c.workloads.begin(), c.workloads.end(), [&](const policy::Workload& w) {
      return w.namespace_ == ns && w.service_account == sa;
    });
  }

  // TG104: principals and serviceAccounts naming service accounts that do not exist.
  void tg104_unknown_accounts(const policy::Rule& r) {
    if (c.service_accounts == nullptr) return;
    auto each = [&](Attr attr, const std::vector<std::string>& values, const std::string& base) {
      for (std::size_t k = 0; k < values.size(); ++k) {
        const auto account = named_account(attr, values[k]);
        if (!account) continue;
        const auto& [ns, sa] = *account;
        if (ns.find('*') != std::string::npos || sa.find('*') != std::string::npos) continue;
        if (account_exists(ns, sa)) continue;
        const bool ns_known = c.namespaces != nullptr && c.namespaces->contains(ns);
        add(ns_known ? Sev::kWarning : Sev::kInfo, "TG104", base + "[" + std::to_string(k) + "]",
            "\"" + values[k] + "\" names service account " + ns + "/" + sa +
                (ns_known ? ", which does not exist in the given manifests"
                          : ", in a namespace the given manifests do not describe"));
      }
    };
    for_each_match(r, [&](const policy::Match& m) {
      each(m.attr, m.values, m.values_path);
      each(m.attr, m.not_values, m.not_values_path);
    });
  }

  void run() {
    if (p.action == Action::kUnknown) return;
    tg101_shadowed_by_deny_all();
    tg102_selects_nothing();
    tg109_target_refs();
    tg107_tg108_no_rules();
    for (std::size_t i = 0; i < p.rules.size(); ++i) {
      const auto& r = p.rules[i];
      if (r.null_rule || r.invalid_reason) continue;
      tg103_http_only_on_tcp(i, r);
      tg105_needs_mtls(i, r);
      tg104_unknown_accounts(r);
    }
  }
};

// Does `d`'s selector pick every workload that `p`'s does? Both apply to sidecars (no
// targetRefs); d's namespace is p's or the root namespace, and each of d's labels is one of
// p's (an absent or empty selector picks every workload of the namespace).
bool selects_all_of(const policy::Policy& d, const policy::Policy& p,
                    const policy::MeshConfig& mesh) {
  if (!d.target_refs.empty() || !p.target_refs.empty()) return false;
  const bool root = d.namespace_ == mesh.root_namespace;
  if (!root && d.namespace_ != p.namespace_) return false;
  if (p.namespace_ == mesh.root_namespace && !root) return false;  // p reaches every namespace
  if (!d.selector || d.selector->empty()) return true;
  if (!p.selector) return false;
  for (const auto& [k, v] : *d.selector) {
    auto it = p.selector->find(k);
    if (it == p.selector->end() || it->second != v) return false;
  }
  return true;
}

}  // namespace

std::optional<Finding> shadowed_by_deny(const policy::Policy& p,
                                        std::span<const policy::Policy* const> policies,
                                        const policy::MeshConfig& mesh) {
  if (p.dry_run || p.action != Action::kAllow) return std::nullopt;
  for (const policy::Policy* d : policies) {
    const auto rule = Linter::deny_all_rule(*d);
    if (!rule || !selects_all_of(*d, p, mesh)) continue;
    return Finding{Sev::kError, "TG101", p.key(), "spec.rules",
                   "ALLOW policy " + p.key() + " can never take effect: DENY policy " + d->key() +
                       " " + rule_path(*rule) +
                       " is an empty rule that matches every request and selects every workload "
                       "this policy selects, and DENY is evaluated before ALLOW. Delete " +
                       d->key() + " or give its rule conditions"};
  }
  return std::nullopt;
}

std::vector<Finding> lint_policy(const policy::Policy& p, const Context& c) {
  Linter l{p, c, {}};
  l.run();
  return std::move(l.out);
}

std::vector<Finding> lint_all(const Context& c) {
  std::vector<Finding> out;
  for (const policy::Policy* p : c.policies) {
    out.insert(out.end(), p->findings.begin(), p->findings.end());
    auto mine = lint_policy(*p, c);
    out.insert(out.end(), std::make_move_iterator(mine.begin()),
               std::make_move_iterator(mine.end()));
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const Finding& a, const Finding& b) { return a.object < b.object; });
  return out;
}

}  // namespace tollgate::lint

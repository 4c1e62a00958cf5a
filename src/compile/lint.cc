#include "tollgate/compile/lint.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <map>

#include "tollgate/compile/compile.h"

namespace tollgate::compile {
namespace {

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
  for (char& c : proto) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
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

}  // namespace

std::vector<Finding> lint(const LintInput& in) {
  std::vector<Finding> out;
  for (const auto& p : in.policies) out.insert(out.end(), p.findings.begin(), p.findings.end());
  auto add = [&](Sev sev, const char* code, const policy::Policy& p, std::string path,
                 std::string msg) {
    out.push_back(Finding{sev, code, p.key(), std::move(path), std::move(msg)});
  };

  // TG101: a DENY rule matching every request on a workload that ALLOW policies select.
  std::set<std::string> reported;
  for (const auto& w : in.workloads) {
    std::vector<const policy::Policy*> allows, deny_all;
    std::map<const policy::Policy*, std::size_t> deny_rule;
    for (const auto& p : in.policies) {
      if (p.dry_run || !applies_to(p, w, in.mesh)) continue;
      if (p.action == Action::kAllow) allows.push_back(&p);
      if (p.action == Action::kDeny) {
        for (std::size_t i = 0; i < p.rules.size(); ++i) {
          if (rule_matches_everything(p.rules[i])) {
            deny_all.push_back(&p);
            deny_rule[&p] = i;
            break;
          }
        }
      }
    }
    for (const auto* d : deny_all) {
      for (const auto* a : allows) {
        const std::string key = d->key() + "|" + a->key();
        if (!reported.insert(key).second) continue;
        add(Sev::kError, "TG101", *a, "spec.rules",
            "ALLOW policy " + a->key() + " can never take effect on " + workload_name(w) +
                ": DENY policy " + d->key() + " " + rule_path(deny_rule[d]) +
                " is an empty rule that matches every request, and DENY is evaluated before "
                "ALLOW. Delete " +
                d->key() +
                " (any ALLOW policy already denies what it does "
                "not match) or give its rule conditions");
      }
    }
  }

  for (const auto& p : in.policies) {
    if (p.action == Action::kUnknown) continue;
    // TG102: a selector that selects no known workload.
    if (!in.workloads.empty() && p.target_refs.empty()) {
      bool any = false;
      for (const auto& w : in.workloads) any = any || applies_to(p, w, in.mesh);
      if (!any) {
        add(Sev::kWarning, "TG102", p, p.selector ? "spec.selector" : "metadata.namespace",
            p.selector ? "selector matches no workload in the given manifests"
                       : "no workload in namespace " + p.namespace_ + " in the given manifests");
      }
    }
    if (!p.target_refs.empty()) {
      add(Sev::kInfo, "TG109", p, "spec.targetRefs",
          "a policy with targetRef(s) is ignored by sidecars; it only attaches to Gateway API "
          "gateways");
    }
    // TG107/TG108: policies without rules.
    if (!p.rules_present) {
      if (p.action == Action::kAllow) {
        add(Sev::kInfo, "TG108", p, "spec.rules",
            "ALLOW policy without rules allows nothing: every request to the selected "
            "workloads is denied unless another ALLOW policy matches");
      } else {
        add(Sev::kWarning, "TG107", p, "spec.rules",
            std::string(policy::action_name(p.action)) +
                " policy without rules never matches (did you mean rules: [{}], which matches "
                "every request?)");
      }
    }
    for (std::size_t i = 0; i < p.rules.size(); ++i) {
      const auto& r = p.rules[i];
      if (r.null_rule || r.invalid_reason) continue;
      bool http_only = false, mtls = false;
      for_each_match(r, [&](const policy::Match& m) {
        http_only = http_only || policy::attr_is_http_only(m.attr);
        mtls = mtls || policy::attr_needs_mtls(m.attr);
      });
      // TG103: HTTP-only fields in a rule that will meet TCP traffic on a selected workload.
      if (http_only) {
        std::set<std::string> rule_ports;
        for_each_match(r, [&](const policy::Match& m) {
          if (m.attr == Attr::kPort) rule_ports.insert(m.values.begin(), m.values.end());
        });
        std::set<std::string> hits;
        for (const auto& w : in.workloads) {
          if (!applies_to(p, w, in.mesh)) continue;
          for (const auto& [port, what] : tcp_ports(w, in.services)) {
            if (rule_ports.empty() || rule_ports.count(std::to_string(port)) > 0) {
              hits.insert(workload_name(w) + " " + what);
            }
          }
        }
        if (!hits.empty()) {
          std::string where;
          for (const auto& h : hits) where += (where.empty() ? "" : "; ") + h;
          add(Sev::kWarning, "TG103", p, rule_path(i),
              "uses HTTP-only fields but meets TCP traffic on " + where +
                  (p.action == Action::kAllow
                       ? ": Istio drops this ALLOW rule there, so it never allows those "
                         "connections"
                       : ": Istio ignores those fields there, so this " +
                             std::string(policy::action_name(p.action)) +
                             " rule matches every such connection its other fields match; "
                             "scope it with ports"));
        }
      }
      // TG105: identities need mTLS.
      if (mtls) {
        add(Sev::kInfo, "TG105", p, rule_path(i),
            "principals, namespaces, serviceAccounts and trustDomains come from the peer's mTLS "
            "certificate: plaintext callers have none (an ALLOW on them denies plaintext, a "
            "not* in a DENY matches it); enforce STRICT mTLS with a PeerAuthentication");
      }
      // TG104: principals naming service accounts that do not exist.
      if (in.service_accounts == nullptr) continue;
      for_each_match(r, [&](const policy::Match& m) {
        auto check = [&](const std::string& ns, const std::string& sa, const std::string& path,
                         const std::string& value) {
          if (ns.find('*') != std::string::npos || sa.find('*') != std::string::npos) return;
          if (sa == "default" || in.service_accounts->count(ns + "/" + sa) > 0) return;
          for (const auto& w : in.workloads) {
            if (w.namespace_ == ns && w.service_account == sa) return;
          }
          const bool ns_known = in.namespaces != nullptr && in.namespaces->count(ns) > 0;
          add(ns_known ? Sev::kWarning : Sev::kInfo, "TG104", p, path,
              "\"" + value + "\" names service account " + ns + "/" + sa +
                  (ns_known ? ", which does not exist in the given manifests"
                            : ", in a namespace the given manifests do not describe"));
        };
        auto each = [&](const std::vector<std::string>& vals, const std::string& base) {
          for (std::size_t k = 0; k < vals.size(); ++k) {
            const std::string& v = vals[k];
            const std::string path = base + "[" + std::to_string(k) + "]";
            if (m.attr == Attr::kSourcePrincipal) {
              // <td>/ns/<ns>/sa/<sa>
              std::vector<std::string> parts;
              std::size_t start = 0;
              while (true) {
                auto sl = v.find('/', start);
                parts.push_back(v.substr(start, sl == std::string::npos ? sl : sl - start));
                if (sl == std::string::npos) break;
                start = sl + 1;
              }
              if (parts.size() == 5 && parts[1] == "ns" && parts[3] == "sa") {
                check(parts[2], parts[4], path, v);
              }
            } else if (m.attr == Attr::kSourceServiceAccount) {
              auto sl = v.find('/');
              if (sl == std::string::npos)
                check(p.namespace_, v, path, v);
              else
                check(v.substr(0, sl), v.substr(sl + 1), path, v);
            }
          }
        };
        each(m.values, m.values_path);
        each(m.not_values, m.not_values_path);
      });
    }
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const Finding& a, const Finding& b) { return a.object < b.object; });
  return out;
}

}  // namespace tollgate::compile

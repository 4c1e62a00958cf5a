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

// Istio's StringMatcher rules written out by hand.
bool like(const std::string& pattern, const std::string& v) {
  if (pattern == "*") return !v.empty();
  if (pattern.size() > 1 && pattern[0] == '*') {
    const std::string suffix = pattern.substr(1);
    return v.size() >= suffix.size() &&
           v.compare(v.size() - suffix.size(), suffix.size(), suffix) == 0;
  }
  if (pattern.size() > 1 && pattern.back() == '*') {
    return v.rfind(pattern.substr(0, pattern.size() - 1), 0) == 0;
  }
  return pattern == v;
}

// '*' matches any run of characters, everything else literally.
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

bool in_cidr(const std::string& cidr, const std::string& ip) {
  auto slash = cidr.find('/');
  const std::string net = cidr.substr(0, slash);
  const int bits = slash == std::string::npos ? 32 : std::stoi(cidr.substr(slash + 1));
  in_addr a{}, b{};
  if (inet_pton(AF_INET, net.c_str(), &a) != 1 || inet_pton(AF_INET, ip.c_str(), &b) != 1) {
    return false;
  }
  const std::uint32_t mask = bits == 0 ? 0 : ~std::uint32_t{0} << (32 - bits);
  return (ntohl(a.s_addr) & mask) == (ntohl(b.s_addr) & mask);
}

struct Req {
  bool tcp = false;
  std::optional<std::string> principal, ip, method, path, host, port, rp;
  json headers = json::object();
};

Req read(const json& r) {
  Req q;
  q.tcp = r.value("protocol", "http") == "tcp";
  if (r.contains("source")) {
    const auto& s = r["source"];
    if (s.contains("principal")) q.principal = s["principal"].get<std::string>();
    if (s.contains("ip")) q.ip = s["ip"].get<std::string>();
  }
  if (!q.tcp) {
    if (r.contains("method")) q.method = r["method"].get<std::string>();
    if (r.contains("path")) {
      std::string p = r["path"].get<std::string>();
      q.path = p.substr(0, p.find('?'));
    }
    if (r.contains("host")) q.host = lower(r["host"].get<std::string>());
    if (r.contains("requestPrincipal")) q.rp = r["requestPrincipal"].get<std::string>();
    if (r.contains("headers")) q.headers = r["headers"];
  }
  if (r.contains("port")) q.port = std::to_string(r["port"].get<int>());
  return q;
}

bool http_only_field(const std::string& f) {
  return f == "requestPrincipals" || f == "notRequestPrincipals" || f == "hosts" ||
         f == "notHosts" || f == "methods" || f == "notMethods" || f == "paths" || f == "notPaths";
}

bool http_only_key(const std::string& k) { return k.rfind("request.", 0) == 0; }

// Does one value of a field match? (The field's name says which attribute.)
bool value_matches(const std::string& field, const std::string& v, const Req& q,
                   const std::string& policy_ns) {
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
  if (field == "serviceAccounts") {
    if (!q.principal) return false;
    const std::string want = v.find('/') == std::string::npos ? policy_ns + "/" + v : v;
    auto at = q.principal->find("/ns/");
    if (at == std::string::npos) return false;
    std::string rest = q.principal->substr(at + 4);  // "<ns>/sa/<sa>"
    auto sa = rest.find("/sa/");
    return sa != std::string::npos && rest.substr(0, sa) + "/" + rest.substr(sa + 4) == want;
  }
  if (field == "ipBlocks" || field == "source.ip") return q.ip && in_cidr(v, *q.ip);
  if (field == "requestPrincipals" || field == "request.auth.principal") {
    if (!q.rp) return false;
    if (v == "*") {
      auto s = q.rp->rfind('/');
      return s != std::string::npos && s > 0 && s + 1 < q.rp->size();
    }
    return like(v, *q.rp);
  }
  if (field == "hosts") {
    if (!q.host) return false;
    return v == "*" || like(lower(v), *q.host);
  }
  if (field == "methods") return q.method && (v == "*" || like(v, *q.method));
  if (field == "paths") return q.path && like(v, *q.path);
  if (field == "ports" || field == "destination.port") return q.port && *q.port == v;
  if (field.rfind("request.headers[", 0) == 0) {
    const std::string name = lower(field.substr(16, field.size() - 17));
    if (!q.headers.contains(name)) return false;
    return v == "*" || like(v, q.headers[name].get<std::string>());
  }
  return false;
}

bool any_value(const std::string& field, const json& values, const Req& q, const std::string& ns) {
  for (const auto& v : values) {
    if (value_matches(field, v.get<std::string>(), q, ns)) return true;
  }
  return false;
}

// One source/operation object: every present field holds.
bool fields_match(const json& obj, const Req& q, bool tcp_deny, const std::string& ns) {
  for (const auto& [name, values] : obj.items()) {
    if (tcp_deny && http_only_field(name)) continue;
    const bool negative = name.rfind("not", 0) == 0;
    std::string field = negative ? name.substr(3) : name;
    if (negative) field[0] = static_cast<char>(std::tolower(field[0]));
    if (values.empty()) continue;
    if (any_value(field, values, q, ns) == negative) return false;
  }
  return true;
}

bool rule_matches(const json& rule, const Req& q, bool deny, const std::string& ns) {
  if (q.tcp && !deny) {  // an ALLOW rule with any HTTP-only field is not generated for TCP
    for (const char* side : {"from", "to"}) {
      if (!rule.contains(side)) continue;
      for (const auto& e : rule[side]) {
        for (const auto& [k, obj] : e.items()) {
          for (const auto& [name, values] : obj.items()) {
            if (http_only_field(name) && !values.empty()) return false;
          }
        }
      }
    }
    if (rule.contains("when")) {
      for (const auto& c : rule["when"]) {
        if (http_only_key(c["key"].get<std::string>())) return false;
      }
    }
  }
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
      if (c.contains("values") && !c["values"].empty() && !any_value(key, c["values"], q, ns)) {
        return false;
      }
      if (c.contains("notValues") && any_value(key, c["notValues"], q, ns)) return false;
    }
  }
  return true;
}

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

RefDecision reference_decide(const std::vector<json>& policies, const json& workload,
                             const json& request) {
  const Req q = read(request);
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
  if (deny_key) return {false, deny_policy};
  if (!has_allow) return {true, std::nullopt};
  if (allow_key) return {true, allow_policy};
  return {false, std::nullopt};
}

}  // namespace tollgate::testing

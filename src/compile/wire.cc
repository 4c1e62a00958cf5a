// The decision table's JSON wire format (docs/decision-table.md).
#include <cstdio>

#include "tollgate/compile/compile.h"
#include "tollgate/policy/values.h"

namespace tollgate::compile {
namespace {

using nlohmann::json;
using policy::Attr;

std::vector<std::string> split_arg(const std::string& arg) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (true) {
    auto z = arg.find('\0', start);
    out.push_back(arg.substr(start, z == std::string::npos ? std::string::npos : z - start));
    if (z == std::string::npos) break;
    start = z + 1;
  }
  return out;
}

json predicate_json(const Predicate& p) {
  json j;
  j["attr"] = policy::attr_name(p.attr);
  if (p.attr == Attr::kHeader) j["header"] = p.arg;
  if (p.attr == Attr::kClaim) j["claim"] = split_arg(p.arg);
  if (p.attr == Attr::kMetadata) {
    auto parts = split_arg(p.arg);
    j["filter"] = parts.at(0);
    j["key"] = parts.size() > 1 ? parts[1] : "";
  }
  if (p.negate) j["not"] = true;
  if (p.http_only) j["httpOnly"] = true;
  j["values"] = p.values;
  return j;
}

json side_json(const std::vector<Conjunction>& side) {
  json arr = json::array();
  for (const auto& c : side) {
    json conj = json::array();
    for (const auto& p : c.all) conj.push_back(predicate_json(p));
    arr.push_back(std::move(conj));
  }
  return arr;
}

json rules_json(const std::vector<TableRule>& rules) {
  json arr = json::array();
  for (const auto& r : rules) {
    json j;
    j["name"] = r.name;
    j["policy"] = r.policy;
    j["rule"] = r.rule;
    j["action"] = policy::action_name(r.action);
    if (r.tcp_dropped) j["tcpDropped"] = true;
    j["principals"] = side_json(r.principals);
    j["permissions"] = side_json(r.permissions);
    arr.push_back(std::move(j));
  }
  return arr;
}

// --- reading ---

struct Reader {
  std::string error;
  bool fail(const std::string& where, const std::string& what) {
    if (error.empty()) error = where + ": " + what;
    return false;
  }

  bool attr(const std::string& name, Attr& out) {
    for (int i = 0; i < policy::kAttrCount; ++i) {
      auto a = static_cast<Attr>(i);
      if (name == policy::attr_name(a)) {
        out = a;
        return true;
      }
    }
    return false;
  }

  bool strings(const json& j, const std::string& where, std::vector<std::string>& out) {
    if (!j.is_array()) return fail(where, "must be a list of strings");
    for (const auto& e : j) {
      if (!e.is_string()) return fail(where, "must be a list of strings");
      out.push_back(e.get<std::string>());
    }
    return true;
  }

  bool predicate(const json& j, const std::string& where, Predicate& p) {
    if (!j.is_object()) return fail(where, "must be an object");
    if (!j.contains("attr") || !j["attr"].is_string() ||
        !attr(j["attr"].get<std::string>(), p.attr)) {
      return fail(where + ".attr", "unknown attribute");
    }
    p.negate = j.value("not", false);
    p.http_only = j.value("httpOnly", false);
    if (p.attr == Attr::kHeader) {
      if (!j.contains("header") || !j["header"].is_string()) return fail(where, "needs header");
      p.arg = j["header"].get<std::string>();
    } else if (p.attr == Attr::kClaim) {
      std::vector<std::string> path;
      if (!j.contains("claim") || !strings(j["claim"], where + ".claim", path) || path.empty()) {
        return fail(where, "needs a claim path");
      }
      for (std::size_t i = 0; i < path.size(); ++i) {
        if (i > 0) p.arg.push_back('\0');
        p.arg += path[i];
      }
    } else if (p.attr == Attr::kMetadata) {
      if (!j.contains("filter") || !j["filter"].is_string() || !j.contains("key") ||
          !j["key"].is_string()) {
        return fail(where, "needs filter and key");
      }
      p.arg = j["filter"].get<std::string>() + std::string(1, '\0') + j["key"].get<std::string>();
    }
    if (!j.contains("values")) return fail(where, "needs values");
    if (!strings(j["values"], where + ".values", p.values)) return false;
    for (const auto& v : p.values) {
      if (!policy::check_value(p.attr, v).ok()) return fail(where + ".values", "bad value " + v);
    }
    return true;
  }

  bool side(const json& j, const std::string& where, std::vector<Conjunction>& out) {
    if (!j.is_array()) return fail(where, "must be a list");
    for (std::size_t i = 0; i < j.size(); ++i) {
      const std::string w = where + "[" + std::to_string(i) + "]";
      if (!j[i].is_array()) return fail(w, "must be a list");
      Conjunction c;
      for (std::size_t k = 0; k < j[i].size(); ++k) {
        Predicate p;
        if (!predicate(j[i][k], w + "[" + std::to_string(k) + "]", p)) return false;
        c.all.push_back(std::move(p));
      }
      out.push_back(std::move(c));
    }
    return true;
  }

  bool rules(const json& obj, const char* key, std::vector<TableRule>& out) {
    if (!obj.contains(key)) return true;
    const json& j = obj[key];
    if (!j.is_array()) return fail(key, "must be a list");
    for (std::size_t i = 0; i < j.size(); ++i) {
      const std::string w = std::string(key) + "[" + std::to_string(i) + "]";
      const json& r = j[i];
      if (!r.is_object()) return fail(w, "must be an object");
      TableRule t;
      if (!r.contains("name") || !r["name"].is_string() || !r.contains("policy") ||
          !r["policy"].is_string()) {
        return fail(w, "needs name and policy");
      }
      t.name = r["name"].get<std::string>();
      t.policy = r["policy"].get<std::string>();
      t.rule = r.value("rule", 0);
      t.action = policy::parse_action(r.value("action", ""));
      if (t.action == policy::Action::kUnknown) return fail(w + ".action", "unknown action");
      t.tcp_dropped = r.value("tcpDropped", false);
      if (!r.contains("principals") || !side(r["principals"], w + ".principals", t.principals)) {
        return fail(w, "needs principals");
      }
      if (!r.contains("permissions") ||
          !side(r["permissions"], w + ".permissions", t.permissions)) {
        return fail(w, "needs permissions");
      }
      out.push_back(std::move(t));
    }
    return true;
  }
};

std::string hex_hash(const std::string& s) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%016llx%016llx",
                static_cast<unsigned long long>(hash_bytes(s, 1)),
                static_cast<unsigned long long>(hash_bytes(s, 2)));
  return buf;
}

json body_json(const DecisionTable& t) {
  json j;
  j["apiVersion"] = kTableApiVersion;
  j["kind"] = "DecisionTable";
  j["namespace"] = t.namespace_;
  j["pathNormalization"] = policy::path_normalization_name(t.path_normalization);
  j["policies"] = t.policies;
  j["hasAllow"] = t.has_allow;
  json custom = json::array();
  for (const auto& s : t.custom) {
    json c;
    c["provider"] = s.provider;
    c["type"] = s.type;
    if (s.deny_on_match) {
      c["denyOnMatch"] = true;
      c["denyReason"] = s.deny_reason;
    }
    c["rules"] = rules_json(s.rules);
    custom.push_back(std::move(c));
  }
  j["custom"] = std::move(custom);
  j["deny"] = rules_json(t.deny);
  j["allow"] = rules_json(t.allow);
  j["audit"] = rules_json(t.audit);
  j["dryRun"] = {{"deny", rules_json(t.dry_run_deny)},
                 {"allow", rules_json(t.dry_run_allow)},
                 {"hasAllow", t.has_dry_run_allow}};
  j["notes"] = t.notes;
  return j;
}

}  // namespace

nlohmann::json to_json(const DecisionTable& t) {
  json j = body_json(t);
  j["hash"] = t.hash.empty() ? hex_hash(j.dump()) : t.hash;
  return j;
}

util::Result<DecisionTable> table_from_json(const nlohmann::json& j) {
  if (!j.is_object()) return util::make_error("table: must be an object");
  if (j.value("apiVersion", "") != kTableApiVersion) {
    return util::make_error(std::string("table: apiVersion must be ") + kTableApiVersion);
  }
  DecisionTable t;
  Reader r;
  t.namespace_ = j.value("namespace", "");
  const std::string norm = j.value("pathNormalization", "BASE");
  const auto normalization = policy::parse_path_normalization(norm);
  if (!normalization) return util::make_error("table: unknown pathNormalization " + norm);
  t.path_normalization = *normalization;
  t.has_allow = j.value("hasAllow", false);
  if (j.contains("policies")) r.strings(j["policies"], "policies", t.policies);
  if (j.contains("notes")) r.strings(j["notes"], "notes", t.notes);
  if (j.contains("custom")) {
    if (!j["custom"].is_array()) return util::make_error("table: custom must be a list");
    for (const auto& c : j["custom"]) {
      CustomStage s;
      if (!c.is_object()) return util::make_error("table: custom stage must be an object");
      s.provider = c.value("provider", "");
      s.type = c.value("type", "");
      s.deny_on_match = c.value("denyOnMatch", false);
      s.deny_reason = c.value("denyReason", "");
      r.rules(c, "rules", s.rules);
      t.custom.push_back(std::move(s));
    }
  }
  r.rules(j, "deny", t.deny);
  r.rules(j, "allow", t.allow);
  r.rules(j, "audit", t.audit);
  if (j.contains("dryRun") && j["dryRun"].is_object()) {
    r.rules(j["dryRun"], "deny", t.dry_run_deny);
    r.rules(j["dryRun"], "allow", t.dry_run_allow);
    t.has_dry_run_allow = j["dryRun"].value("hasAllow", false);
  }
  if (!r.error.empty()) return util::make_error("table: " + r.error);
  t.finalize();
  t.hash = hex_hash(body_json(t).dump());
  if (j.contains("hash") && j["hash"] != t.hash) {
    return util::make_error("table: hash does not match the content (corrupted or edited)");
  }
  return t;
}

}  // namespace tollgate::compile

// The decision table's JSON wire format (docs/decision-table.md).
#include <cstdio>
#include <limits>
#include <optional>

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
// A table from the wire is untrusted input (an agent reads what a controller sent): every
// field is type-checked, and an error names the field, e.g. "table: allow[0].rule: must be
// an integer". Nothing here throws.

std::string at(const std::string& where, const char* key) {
  return where.empty() ? key : where + "." + key;
}

util::Result<std::string> string_field(const json& o, const char* key, const std::string& where,
                                       std::optional<std::string> fallback = std::nullopt) {
  auto it = o.find(key);
  if (it == o.end()) {
    if (fallback) return *fallback;
    return util::make_error(at(where, key) + ": is required");
  }
  if (!it->is_string()) return util::make_error(at(where, key) + ": must be a string");
  return it->get<std::string>();
}

util::Result<bool> bool_field(const json& o, const char* key, const std::string& where) {
  auto it = o.find(key);
  if (it == o.end()) return false;
  if (!it->is_boolean()) return util::make_error(at(where, key) + ": must be true or false");
  return it->get<bool>();
}

util::Result<int> rule_index_field(const json& o, const std::string& where) {
  auto it = o.find("rule");
  if (it == o.end()) return 0;
  if (!it->is_number_integer() || it->get<long long>() < 0 ||
      it->get<long long>() > std::numeric_limits<int>::max()) {
    return util::make_error(at(where, "rule") + ": must be a non-negative integer");
  }
  return static_cast<int>(it->get<long long>());
}

util::Result<std::vector<std::string>> strings(const json& j, const std::string& where) {
  if (!j.is_array()) return util::make_error(where + ": must be a list of strings");
  std::vector<std::string> out;
  for (const auto& e : j) {
    if (!e.is_string()) return util::make_error(where + ": must be a list of strings");
    out.push_back(e.get<std::string>());
  }
  return out;
}

util::Result<std::vector<std::string>> strings_field(const json& o, const char* key,
                                                     const std::string& where) {
  auto it = o.find(key);
  if (it == o.end()) return std::vector<std::string>();
  return strings(*it, at(where, key));
}

util::Result<Attr> attr_named(const json& o, const std::string& where) {
  TOLLGATE_TRY(name, string_field(o, "attr", where));
  for (int i = 0; i < policy::kAttrCount; ++i) {
    const auto a = static_cast<Attr>(i);
    if (name == policy::attr_name(a)) return a;
  }
  return util::make_error(at(where, "attr") + ": unknown attribute \"" + name + "\"");
}

// The predicate's argument: a header name, a claim path, or "filter\0key".
util::Result<std::string> predicate_arg(const json& j, Attr attr, const std::string& where) {
  if (attr == Attr::kHeader) return string_field(j, "header", where);
  if (attr == Attr::kClaim) {
    auto it = j.find("claim");
    if (it == j.end()) return util::make_error(at(where, "claim") + ": is required");
    TOLLGATE_TRY(path, strings(*it, at(where, "claim")));
    if (path.empty()) return util::make_error(at(where, "claim") + ": must not be empty");
    std::string arg;
    for (std::size_t i = 0; i < path.size(); ++i) {
      if (i > 0) arg.push_back('\0');
      arg += path[i];
    }
    return arg;
  }
  if (attr == Attr::kMetadata) {
    TOLLGATE_TRY(filter, string_field(j, "filter", where));
    TOLLGATE_TRY(key, string_field(j, "key", where));
    return filter + std::string(1, '\0') + key;
  }
  return std::string();
}

util::Result<Predicate> read_predicate(const json& j, const std::string& where) {
  if (!j.is_object()) return util::make_error(where + ": must be an object");
  Predicate p;
  TOLLGATE_TRY(attr, attr_named(j, where));
  p.attr = attr;
  TOLLGATE_TRY(negate, bool_field(j, "not", where));
  TOLLGATE_TRY(http_only, bool_field(j, "httpOnly", where));
  TOLLGATE_TRY(arg, predicate_arg(j, attr, where));
  p.negate = negate;
  p.http_only = http_only;
  p.arg = std::move(arg);
  auto values = j.find("values");
  if (values == j.end()) return util::make_error(at(where, "values") + ": is required");
  TOLLGATE_TRY(vs, strings(*values, at(where, "values")));
  for (const auto& v : vs) {
    if (auto ok = policy::check_value(p.attr, v); !ok.ok()) {
      return util::make_error(at(where, "values") + ": \"" + v + "\" " + ok.error().message);
    }
  }
  p.values = std::move(vs);
  return p;
}

util::Result<std::vector<Conjunction>> read_side(const json& r, const char* key,
                                                 const std::string& where) {
  auto it = r.find(key);
  const std::string w = at(where, key);
  if (it == r.end()) return util::make_error(w + ": is required");
  if (!it->is_array()) return util::make_error(w + ": must be a list");
  std::vector<Conjunction> out;
  for (std::size_t i = 0; i < it->size(); ++i) {
    const std::string wi = w + "[" + std::to_string(i) + "]";
    const json& conj = (*it)[i];
    if (!conj.is_array()) return util::make_error(wi + ": must be a list");
    Conjunction c;
    for (std::size_t k = 0; k < conj.size(); ++k) {
      TOLLGATE_TRY(p, read_predicate(conj[k], wi + "[" + std::to_string(k) + "]"));
      c.all.push_back(std::move(p));
    }
    out.push_back(std::move(c));
  }
  return out;
}

util::Result<TableRule> read_rule(const json& r, const std::string& where) {
  if (!r.is_object()) return util::make_error(where + ": must be an object");
  TableRule t;
  TOLLGATE_TRY(name, string_field(r, "name", where));
  TOLLGATE_TRY(policy_key, string_field(r, "policy", where));
  TOLLGATE_TRY(index, rule_index_field(r, where));
  TOLLGATE_TRY(action, string_field(r, "action", where, ""));
  TOLLGATE_TRY(tcp_dropped, bool_field(r, "tcpDropped", where));
  TOLLGATE_TRY(principals, read_side(r, "principals", where));
  TOLLGATE_TRY(permissions, read_side(r, "permissions", where));
  t.name = std::move(name);
  t.policy = std::move(policy_key);
  t.rule = index;
  t.action = policy::parse_action(action);
  if (t.action == policy::Action::kUnknown) {
    return util::make_error(at(where, "action") + ": unknown action \"" + action + "\"");
  }
  t.tcp_dropped = tcp_dropped;
  t.principals = std::move(principals);
  t.permissions = std::move(permissions);
  return t;
}

// The list `key` of `obj` (absent = none).
util::Result<std::vector<TableRule>> read_rules(const json& obj, const char* key,
                                                const std::string& where) {
  std::vector<TableRule> out;
  auto it = obj.find(key);
  if (it == obj.end()) return out;
  const std::string w = at(where, key);
  if (!it->is_array()) return util::make_error(w + ": must be a list");
  for (std::size_t i = 0; i < it->size(); ++i) {
    TOLLGATE_TRY(rule, read_rule((*it)[i], w + "[" + std::to_string(i) + "]"));
    out.push_back(std::move(rule));
  }
  return out;
}

util::Result<CustomStage> read_stage(const json& c, const std::string& where) {
  if (!c.is_object()) return util::make_error(where + ": must be an object");
  CustomStage s;
  TOLLGATE_TRY(provider, string_field(c, "provider", where, ""));
  TOLLGATE_TRY(type, string_field(c, "type", where, ""));
  TOLLGATE_TRY(deny_on_match, bool_field(c, "denyOnMatch", where));
  TOLLGATE_TRY(deny_reason, string_field(c, "denyReason", where, ""));
  TOLLGATE_TRY(rules, read_rules(c, "rules", where));
  s.provider = std::move(provider);
  s.type = std::move(type);
  s.deny_on_match = deny_on_match;
  s.deny_reason = std::move(deny_reason);
  s.rules = std::move(rules);
  return s;
}

util::Result<std::vector<CustomStage>> read_custom(const json& j) {
  std::vector<CustomStage> out;
  auto it = j.find("custom");
  if (it == j.end()) return out;
  if (!it->is_array()) return util::make_error("custom: must be a list");
  for (std::size_t i = 0; i < it->size(); ++i) {
    TOLLGATE_TRY(stage, read_stage((*it)[i], "custom[" + std::to_string(i) + "]"));
    out.push_back(std::move(stage));
  }
  return out;
}

// Everything but the hash: the table as written, before its indexes are built.
util::Result<DecisionTable> read_body(const json& j) {
  if (!j.is_object()) return util::make_error("must be an object");
  TOLLGATE_TRY(api_version, string_field(j, "apiVersion", "", ""));
  if (api_version != kTableApiVersion) {
    return util::make_error(std::string("apiVersion must be ") + kTableApiVersion);
  }
  DecisionTable t;
  TOLLGATE_TRY(ns, string_field(j, "namespace", "", ""));
  TOLLGATE_TRY(norm, string_field(j, "pathNormalization", "", "BASE"));
  const auto normalization = policy::parse_path_normalization(norm);
  if (!normalization) return util::make_error("pathNormalization: unknown value \"" + norm + "\"");
  TOLLGATE_TRY(has_allow, bool_field(j, "hasAllow", ""));
  TOLLGATE_TRY(policies, strings_field(j, "policies", ""));
  TOLLGATE_TRY(notes, strings_field(j, "notes", ""));
  TOLLGATE_TRY(custom, read_custom(j));
  TOLLGATE_TRY(deny, read_rules(j, "deny", ""));
  TOLLGATE_TRY(allow, read_rules(j, "allow", ""));
  TOLLGATE_TRY(audit, read_rules(j, "audit", ""));
  t.namespace_ = std::move(ns);
  t.path_normalization = *normalization;
  t.has_allow = has_allow;
  t.policies = std::move(policies);
  t.notes = std::move(notes);
  t.custom = std::move(custom);
  t.deny = std::move(deny);
  t.allow = std::move(allow);
  t.audit = std::move(audit);
  if (auto dry = j.find("dryRun"); dry != j.end()) {
    if (!dry->is_object()) return util::make_error("dryRun: must be an object");
    TOLLGATE_TRY(dry_deny, read_rules(*dry, "deny", "dryRun"));
    TOLLGATE_TRY(dry_allow, read_rules(*dry, "allow", "dryRun"));
    TOLLGATE_TRY(dry_has_allow, bool_field(*dry, "hasAllow", "dryRun"));
    t.dry_run_deny = std::move(dry_deny);
    t.dry_run_allow = std::move(dry_allow);
    t.has_dry_run_allow = dry_has_allow;
  }
  return t;
}

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
  auto body = read_body(j);
  if (!body.ok()) return util::make_error("table: " + body.error().message);
  TableBuilder b(std::move(*body));
  DecisionTable t = std::move(b).finish();
  if (auto hash = j.find("hash"); hash != j.end() && *hash != t.hash) {
    return util::make_error("table: hash does not match the content (corrupted or edited)");
  }
  return t;
}

std::string content_hash(const DecisionTable& t) { return hex_hash(body_json(t).dump()); }

}  // namespace tollgate::compile

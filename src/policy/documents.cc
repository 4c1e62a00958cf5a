// Kubernetes documents from JSON or YAML text, and the small JSON inputs (mesh, workload).
#include <yaml-cpp/yaml.h>

#include <cctype>
#include <cstdlib>
#include <regex>
#include <set>
#include <string>

#include "tollgate/policy/parse.h"

namespace tollgate::policy {
namespace {

using nlohmann::json;

constexpr int kMaxDepth = 128;

// Without aliases a document cannot hold more nodes, or more bytes of scalars, than its text
// has bytes; allow some expansion through aliases, but not a "billion laughs".
std::size_t max_nodes(std::string_view text) { return 2 * text.size() + 10'000; }

bool is_int(const std::string& s) {
  std::size_t i = (!s.empty() && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
  if (i >= s.size() || s.size() - i > 18) return false;
  for (; i < s.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return false;
  }
  return true;
}

bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t n = 0;                   // continuation bytes
    unsigned char lo = 0x80, hi = 0xbf;  // allowed range of the first continuation byte
    if (c < 0x80) {
      n = 0;
    } else if (c >= 0xc2 && c <= 0xdf) {
      n = 1;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 2;
      if (c == 0xe0) lo = 0xa0;
      if (c == 0xed) hi = 0x9f;  // no surrogates
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 3;
      if (c == 0xf0) lo = 0x90;
      if (c == 0xf4) hi = 0x8f;
    } else {
      return false;
    }
    if (s.size() - i - 1 < n) return false;
    for (std::size_t k = 1; k <= n; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if (k == 1 ? (b < lo || b > hi) : (b & 0xc0) != 0x80) return false;
    }
    i += n + 1;
  }
  return true;
}

bool is_float(const std::string& s) {
  static const std::regex kFloat(R"([-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?)");
  return s.size() < 64 && std::regex_match(s, kFloat);
}

class Converter {
 public:
  Converter(std::string origin, std::size_t max_nodes)
      : origin_(std::move(origin)), max_nodes_(max_nodes) {}

  util::Result<json> convert(const YAML::Node& n, int depth) {
    if (depth > kMaxDepth) return err(n, "nesting is deeper than " + std::to_string(kMaxDepth));
    if (++nodes_ > max_nodes_) {
      return err(n, "document expands to too many nodes (aliases?)");
    }
    switch (n.Type()) {
      case YAML::NodeType::Undefined:
      case YAML::NodeType::Null:
        return json();
      case YAML::NodeType::Scalar:
        bytes_ += n.Scalar().size();
        if (bytes_ > max_nodes_ * 4) return err(n, "document expands to too many bytes (aliases?)");
        if (!valid_utf8(n.Scalar())) return err(n, "a value is not valid UTF-8");
        return scalar(n);
      case YAML::NodeType::Sequence: {
        json arr = json::array();
        for (const auto& e : n) {
          auto v = convert(e, depth + 1);
          if (!v.ok()) return v;
          arr.push_back(std::move(*v));
        }
        return arr;
      }
      case YAML::NodeType::Map: {
        json obj = json::object();
        for (const auto& kv : n) {
          if (!kv.first.IsScalar()) return err(kv.first, "a map key must be a scalar");
          const std::string key = kv.first.Scalar();
          if (!valid_utf8(key)) return err(kv.first, "a key is not valid UTF-8");
          if (obj.contains(key)) return err(kv.first, "duplicate key \"" + key + "\"");
          auto v = convert(kv.second, depth + 1);
          if (!v.ok()) return v;
          obj[key] = std::move(*v);
        }
        return obj;
      }
    }
    return json();
  }

 private:
  util::Error err(const YAML::Node& n, const std::string& what) {
    const auto m = n.Mark();
    if (m.line >= 0) {
      return util::make_error(origin_ + ":" + std::to_string(m.line + 1) + ":" +
                              std::to_string(m.column + 1) + ": " + what);
    }
    return util::make_error(origin_ + ": " + what);
  }

  static json scalar(const YAML::Node& n) {
    const std::string& s = n.Scalar();
    const std::string& tag = n.Tag();
    if (tag == "!" || tag == "tag:yaml.org,2002:str") return s;  // quoted or !!str
    if (tag == "tag:yaml.org,2002:int" && is_int(s)) return std::stoll(s);
    if (tag != "?" && !tag.empty()) return s;
    if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL") return {};
    if (s == "true" || s == "True" || s == "TRUE") return true;
    if (s == "false" || s == "False" || s == "FALSE") return false;
    if (is_int(s)) return std::stoll(s);
    if (is_float(s)) return std::strtod(s.c_str(), nullptr);  // no exception on overflow
    return s;
  }

  std::string origin_;
  std::size_t max_nodes_;
  std::size_t nodes_ = 0;
  std::size_t bytes_ = 0;
};

void flatten(json obj, const std::string& origin, std::vector<Document>& out, int depth) {
  if (obj.is_null()) return;
  auto kind = obj.is_object() ? obj.find("kind") : obj.end();
  auto items = obj.is_object() ? obj.find("items") : obj.end();
  if (kind != obj.end() && kind->is_string() && items != obj.end() && items->is_array() &&
      depth < 4) {
    const std::string k = kind->get<std::string>();
    if (k.size() >= 4 && k.compare(k.size() - 4, 4, "List") == 0) {
      int i = 0;
      for (auto& item : *items) {
        flatten(std::move(item), origin + ".items[" + std::to_string(i++) + "]", out, depth + 1);
      }
      return;
    }
  }
  out.push_back(Document{std::move(obj), origin});
}

std::string_view trim_left(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  return s;
}

}  // namespace

util::Result<json> yaml_to_json(std::string_view text, const std::string& origin) {
  try {
    YAML::Node n = YAML::Load(std::string(text));
    Converter c(origin, max_nodes(text));
    return c.convert(n, 0);
  } catch (const YAML::Exception& e) {
    return util::make_error(origin + ":" + std::to_string(e.mark.line + 1) + ":" +
                            std::to_string(e.mark.column + 1) + ": " + e.msg);
  } catch (const std::exception& e) {
    return util::make_error(origin + ": " + e.what());
  }
}

util::Result<std::vector<Document>> parse_documents(std::string_view text,
                                                    const std::string& origin) {
  std::vector<Document> out;
  std::string_view t = trim_left(text);
  if (!t.empty() && (t.front() == '{' || t.front() == '[')) {
    // JSON: one value, or several concatenated (one per line, as kubectl -o json | jq -c).
    std::string json_error;
    try {
      json j = json::parse(t);
      if (j.is_array()) {
        int i = 0;
        for (auto& e : j) flatten(std::move(e), origin + "[" + std::to_string(i++) + "]", out, 0);
      } else {
        flatten(std::move(j), origin, out, 0);
      }
      return out;
    } catch (const json::exception& e) {
      json_error = e.what();
    }
    // Not plain JSON: it may still be YAML (flow style); report the JSON error if not.
    auto y = yaml_to_json(text, origin);
    if (!y.ok()) return util::make_error(origin + ": " + json_error);
  }
  try {
    std::vector<YAML::Node> docs = YAML::LoadAll(std::string(text));
    int index = 0;
    for (const auto& d : docs) {
      ++index;
      Converter c(origin, max_nodes(text));
      const std::string where = docs.size() > 1 ? origin + "#" + std::to_string(index) : origin;
      auto j = c.convert(d, 0);
      if (!j.ok()) return j.error();
      if (j->is_null()) continue;
      if (!j->is_object()) {
        return util::make_error(where + ": a document must be a mapping (a Kubernetes object)");
      }
      flatten(std::move(*j), where, out, 0);
    }
  } catch (const YAML::Exception& e) {
    return util::make_error(origin + ":" + std::to_string(e.mark.line + 1) + ":" +
                            std::to_string(e.mark.column + 1) + ": " + e.msg);
  } catch (const std::exception& e) {
    return util::make_error(origin + ": " + e.what());
  }
  return out;
}

util::Result<MeshConfig> parse_mesh(const json& o) {
  MeshConfig m;
  if (o.is_null()) return m;
  if (!o.is_object()) return util::make_error("mesh: must be an object");
  auto str = [&](const json& v, const std::string& where) -> util::Result<std::string> {
    if (!v.is_string()) return util::make_error("mesh." + where + ": must be a string");
    return v.get<std::string>();
  };
  for (const auto& [key, val] : o.items()) {
    if (key == "rootNamespace") {
      TOLLGATE_TRY(s, str(val, key));
      m.root_namespace = s;
    } else if (key == "trustDomain") {
      TOLLGATE_TRY(s, str(val, key));
      m.trust_domain = s;
    } else if (key == "trustDomainAliases") {
      if (!val.is_array()) return util::make_error("mesh.trustDomainAliases: must be a list");
      for (std::size_t i = 0; i < val.size(); ++i) {
        TOLLGATE_TRY(s, str(val[i], key + "[" + std::to_string(i) + "]"));
        m.trust_domain_aliases.push_back(s);
      }
    } else if (key == "extensionProviders") {
      if (!val.is_array()) return util::make_error("mesh.extensionProviders: must be a list");
      for (std::size_t i = 0; i < val.size(); ++i) {
        const std::string where = key + "[" + std::to_string(i) + "]";
        const json& p = val[i];
        if (!p.is_object() || !p.contains("name") || !p["name"].is_string()) {
          return util::make_error("mesh." + where + ": needs a string \"name\"");
        }
        ExtensionProvider ep;
        ep.name = p["name"].get<std::string>();
        if (p.contains("type") && p["type"].is_string()) ep.type = p["type"].get<std::string>();
        if (p.contains("envoyExtAuthzHttp")) ep.type = "http";
        if (p.contains("envoyExtAuthzGrpc")) ep.type = "grpc";
        if (ep.type != "http" && ep.type != "grpc") {
          return util::make_error("mesh." + where + ".type: must be \"http\" or \"grpc\"");
        }
        m.extension_providers.push_back(std::move(ep));
      }
    } else if (key == "enableMultipleCustomAuthzProviders") {
      if (!val.is_boolean()) {
        return util::make_error("mesh.enableMultipleCustomAuthzProviders: must be a boolean");
      }
      m.enable_multiple_custom_providers = val.get<bool>();
    } else if (key == "pathNormalization") {
      const json& v = val.is_object() && val.contains("normalization") ? val["normalization"] : val;
      TOLLGATE_TRY(s, str(v, key));
      if (s == "BASE" || s == "DEFAULT")
        m.path_normalization = PathNormalization::kBase;
      else if (s == "MERGE_SLASHES")
        m.path_normalization = PathNormalization::kMergeSlashes;
      else if (s == "DECODE_AND_MERGE_SLASHES") {
        m.path_normalization = PathNormalization::kDecodeAndMergeSlashes;
      } else if (s == "NONE")
        m.path_normalization = PathNormalization::kNone;
      else {
        return util::make_error("mesh.pathNormalization: \"" + s +
                                "\" is not BASE, MERGE_SLASHES, DECODE_AND_MERGE_SLASHES or NONE");
      }
    } else {
      return util::make_error("mesh." + key + ": unknown setting");
    }
  }
  return m;
}

util::Result<Workload> parse_workload(const json& o) {
  if (!o.is_object()) return util::make_error("workload: must be an object");
  Workload w;
  for (const auto& [key, val] : o.items()) {
    if (key == "namespace") {
      if (!val.is_string() || val.get<std::string>().empty()) {
        return util::make_error("workload.namespace: must be a non-empty string");
      }
      w.namespace_ = val.get<std::string>();
    } else if (key == "pod" || key == "name") {
      if (!val.is_string()) return util::make_error("workload." + key + ": must be a string");
      w.name = val.get<std::string>();
    } else if (key == "serviceAccount") {
      if (!val.is_string()) return util::make_error("workload.serviceAccount: must be a string");
      w.service_account = val.get<std::string>();
    } else if (key == "labels") {
      if (val.is_null()) continue;
      if (!val.is_object()) return util::make_error("workload.labels: must be a map of strings");
      for (const auto& [lk, lv] : val.items()) {
        if (!lv.is_string()) {
          return util::make_error("workload.labels." + lk + ": must be a string");
        }
        w.labels[lk] = lv.get<std::string>();
      }
    } else {
      return util::make_error("workload." + key + ": unknown field");
    }
  }
  if (w.namespace_.empty()) return util::make_error("workload.namespace: is required");
  return w;
}

}  // namespace tollgate::policy

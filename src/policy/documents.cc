// Kubernetes documents from JSON or YAML text, and the small JSON inputs (mesh, workload).
#include <simdjson.h>
#include <yaml.h>

#include <cctype>
#include <cstdlib>
#include <functional>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <string>

#include "tollgate/policy/json_scan.h"
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

// Builds JSON documents from libyaml's event stream. libyaml is iterative (no recursion on
// nesting) and does not loop on malformed flow collections as yaml-cpp 0.7 does.
class YamlReader {
 public:
  YamlReader(std::string_view text, std::string origin)
      : text_(text), origin_(std::move(origin)), max_nodes_(max_nodes(text)) {}

  // Hands every document to `on_document` as soon as it is read (null documents as null).
  using DocumentFn = std::function<util::Status(json document)>;
  util::Status read_each(const DocumentFn& on_document) {
    yaml_parser_t parser;
    if (yaml_parser_initialize(&parser) == 0) return util::make_error(origin_ + ": out of memory");
    yaml_parser_set_input_string(&parser, reinterpret_cast<const unsigned char*>(text_.data()),
                                 text_.size());
    on_document_ = &on_document;
    auto result = run(parser);
    on_document_ = nullptr;
    yaml_parser_delete(&parser);
    return result;
  }

  // Reads every document; null documents are returned as null.
  util::Result<std::vector<json>> read_all() {
    std::vector<json> docs;
    auto r = read_each([&](json d) -> util::Status {
      docs.push_back(std::move(d));
      return util::ok();
    });
    if (!r.ok()) return r.error();
    return docs;
  }

 private:
  // nlohmann::json's move constructor is noexcept, but clang-tidy 14 cannot see through its
  // assert_invariant(); the implicit members here do not throw.
  // NOLINTNEXTLINE(bugprone-exception-escape)
  struct Frame {
    json value;
    std::string key;  // mappings: the pending key
    bool have_key = false;
    std::string anchor;
  };

  util::Error at(const yaml_mark_t& m, const std::string& what) const {
    return util::make_error(origin_ + ":" + std::to_string(m.line + 1) + ":" +
                            std::to_string(m.column + 1) + ": " + what);
  }

  // Places a finished value into the enclosing collection (or the document).
  util::Status place(json v, const yaml_mark_t& m) {
    if (++nodes_ > max_nodes_) return at(m, "document expands to too many nodes (aliases?)");
    if (stack_.empty()) {
      doc_ = std::move(v);
      return util::ok();
    }
    Frame& f = stack_.back();
    if (f.value.is_array()) {
      f.value.push_back(std::move(v));
    } else if (!f.have_key) {
      if (!v.is_string()) return at(m, "a map key must be a scalar");
      f.key = v.get<std::string>();
      if (f.value.contains(f.key)) return at(m, "duplicate key \"" + f.key + "\"");
      f.have_key = true;
    } else {
      f.value[f.key] = std::move(v);
      f.have_key = false;
    }
    return util::ok();
  }

  static json scalar(const std::string& s, const yaml_event_t& e) {
    const bool plain =
        e.data.scalar.plain_implicit != 0 && e.data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    const std::string tag =
        e.data.scalar.tag != nullptr ? reinterpret_cast<const char*>(e.data.scalar.tag) : "";
    if (tag == "tag:yaml.org,2002:str" || (!plain && tag.empty())) return s;
    if (tag == "tag:yaml.org,2002:int" && is_int(s)) return std::stoll(s);
    if (!tag.empty() && tag != "?") return s;
    if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL") return {};
    if (s == "true" || s == "True" || s == "TRUE") return true;
    if (s == "false" || s == "False" || s == "FALSE") return false;
    if (is_int(s)) return std::stoll(s);
    if (is_float(s)) return std::strtod(s.c_str(), nullptr);  // no exception on overflow
    return s;
  }

  util::Status run(yaml_parser_t& parser) {
    while (true) {
      yaml_event_t e;
      if (yaml_parser_parse(&parser, &e) == 0) {
        const std::string problem = parser.problem != nullptr ? parser.problem : "invalid YAML";
        return at(parser.problem_mark, problem);
      }
      auto r = handle(e);
      const bool end = e.type == YAML_STREAM_END_EVENT;
      yaml_event_delete(&e);
      if (!r.ok()) return r.error();
      if (end) return util::ok();
    }
  }

  util::Status handle(const yaml_event_t& e) {
    switch (e.type) {
      case YAML_DOCUMENT_START_EVENT:
        doc_ = json();
        anchors_.clear();
        return util::ok();
      case YAML_DOCUMENT_END_EVENT: {
        json doc = std::move(doc_);
        doc_ = json();
        anchors_.clear();
        return (*on_document_)(std::move(doc));
      }
      case YAML_SEQUENCE_START_EVENT:
      case YAML_MAPPING_START_EVENT: {
        if (stack_.size() >= static_cast<std::size_t>(kMaxDepth)) {
          return at(e.start_mark, "nesting is deeper than " + std::to_string(kMaxDepth));
        }
        Frame f;
        f.value = e.type == YAML_SEQUENCE_START_EVENT ? json::array() : json::object();
        const auto* anchor = e.type == YAML_SEQUENCE_START_EVENT ? e.data.sequence_start.anchor
                                                                 : e.data.mapping_start.anchor;
        if (anchor != nullptr) f.anchor = reinterpret_cast<const char*>(anchor);
        stack_.push_back(std::move(f));
        return util::ok();
      }
      case YAML_SEQUENCE_END_EVENT:
      case YAML_MAPPING_END_EVENT: {
        Frame f = std::move(stack_.back());
        stack_.pop_back();
        if (!f.anchor.empty()) remember(f.anchor, f.value);
        return place(std::move(f.value), e.start_mark);
      }
      case YAML_SCALAR_EVENT: {
        const std::string s(reinterpret_cast<const char*>(e.data.scalar.value),
                            e.data.scalar.length);
        bytes_ += s.size();
        if (bytes_ > max_nodes_ * 4) {
          return at(e.start_mark, "document expands to too many bytes (aliases?)");
        }
        if (!valid_utf8(s)) return at(e.start_mark, "a value is not valid UTF-8");
        json v = scalar(s, e);
        if (e.data.scalar.anchor != nullptr) {
          remember(reinterpret_cast<const char*>(e.data.scalar.anchor), v);
        }
        return place(std::move(v), e.start_mark);
      }
      case YAML_ALIAS_EVENT: {
        auto it = anchors_.find(reinterpret_cast<const char*>(e.data.alias.anchor));
        if (it == anchors_.end()) return at(e.start_mark, "unknown alias");
        // An alias copies its value: charge its size to the budgets.
        nodes_ += it->second.nodes;
        bytes_ += it->second.bytes;
        if (bytes_ > max_nodes_ * 4) {
          return at(e.start_mark, "document expands to too many bytes (aliases?)");
        }
        if (nodes_ > max_nodes_) {
          return at(e.start_mark, "document expands to too many nodes (aliases?)");
        }
        return place(it->second.value, e.start_mark);
      }
      default:
        return util::ok();
    }
  }

  // nlohmann::json's move constructor is noexcept, but clang-tidy 14 cannot see through its
  // assert_invariant(); the implicit members here do not throw.
  // NOLINTNEXTLINE(bugprone-exception-escape)
  struct Anchored {
    json value;
    std::size_t nodes = 0;
    std::size_t bytes = 0;
  };

  static void count(const json& v, std::size_t& nodes, std::size_t& bytes) {
    ++nodes;
    if (v.is_string()) bytes += v.get_ref<const std::string&>().size();
    if (v.is_object()) {
      for (const auto& [k, x] : v.items()) {
        bytes += k.size();
        count(x, nodes, bytes);
      }
    } else if (v.is_array()) {
      for (const auto& x : v) count(x, nodes, bytes);
    }
  }

  void remember(const std::string& anchor, const json& v) {
    Anchored a{v, 0, 0};
    count(v, a.nodes, a.bytes);
    anchors_[anchor] = std::move(a);
  }

  std::string_view text_;
  std::string origin_;
  const DocumentFn* on_document_ = nullptr;
  std::size_t max_nodes_;
  std::size_t nodes_ = 0;
  std::size_t bytes_ = 0;
  json doc_;
  std::vector<Frame> stack_;
  std::map<std::string, Anchored> anchors_;
};

// One object (or a List of them) as JSON text, already validated (so it is not checked
// again): its kind and apiVersion, and a List's items, found without building it. The
// members are read until the kind shows the object is not a List (kubectl writes kind
// first); a List's items are collected as they are passed, in the same pass.
util::Status flatten(std::string_view text, const std::string& origin, int depth,
                     const ObjectFn& on_object) {
  const std::size_t start = text.find_first_not_of(" \t\r\n");
  if (start == std::string_view::npos || text.substr(start, 4) == "null") return util::ok();
  if (text[start] != '{') {
    return util::make_error(origin + ": a document must be an object (a Kubernetes object)");
  }
  ObjectText o{text, "", "", origin};
  std::vector<std::string_view> items;
  bool has_items = false;
  constexpr std::string_view kStop = "stop";  // not a List: the rest is not needed
  auto is_list = [](const std::string& kind) {
    return kind.size() >= 4 && kind.compare(kind.size() - 4, 4, "List") == 0;
  };
  auto member = [&](std::string_view key, std::string_view value) -> util::Status {
    if (key == "kind" || key == "apiVersion") {
      auto v = json_scan::string_value(value);
      (key == "kind" ? o.kind : o.api_version) = v.ok() ? *v : "";
      if (!o.kind.empty() && !o.api_version.empty() && !is_list(o.kind)) {
        return util::make_error(std::string(kStop));
      }
    } else if (key == "items" && !value.empty() && value.front() == '[' && depth < 4) {
      has_items = true;
      return json_scan::for_each_element(
          value,
          [&](std::string_view item) {
            items.push_back(item);
            return util::ok();
          },
          true);
    }
    return util::ok();
  };
  auto scanned = json_scan::for_each_member(text, member, true);
  if (!scanned.ok() && scanned.error().message != kStop) return scanned.error();
  if (!is_list(o.kind) || !has_items) return on_object(o);
  for (std::size_t i = 0; i < items.size(); ++i) {
    TOLLGATE_TRY_STATUS(
        flatten(items[i], origin + ".items[" + std::to_string(i) + "]", depth + 1, on_object));
  }
  return util::ok();
}

// JSON text: validated first (a file that does not parse hands over nothing), then flattened
// in place. An error without `yaml_fallback`: the text is not JSON, and may be flow-style YAML.
util::Status for_each_json_object(std::string_view text, const std::string& origin,
                                  const ObjectFn& on_object, bool& not_json) {
  auto end = json_scan::value_end(text, 0);
  if (end.ok() && text.find_first_not_of(" \t\r\n", *end) != std::string_view::npos) {
    end = util::make_error("unexpected text after the JSON value");
  }
  if (!end.ok()) {
    not_json = true;
    return util::make_error(origin + ": " + end.error().message);
  }
  if (!simdjson::validate_utf8(text.data(), text.size())) {
    return util::make_error(origin + ": the text is not valid UTF-8");
  }
  const std::size_t start = text.find_first_not_of(" \t\r\n");
  if (text[start] == '{') return flatten(text, origin, 0, on_object);
  int i = 0;
  return json_scan::for_each_element(
      text,
      [&](std::string_view e) {
        return flatten(e, origin + "[" + std::to_string(i++) + "]", 0, on_object);
      },
      true);
}

// YAML, one document at a time. A document is named "origin#N" when the text holds several,
// so each is handed over once the next one (or the end) shows whether there are several.
util::Status for_each_yaml_object(std::string_view text, const std::string& origin,
                                  const ObjectFn& on_object) {
  std::optional<json> held;
  int count = 0;
  auto emit = [&](json doc, const std::string& where) -> util::Status {
    if (doc.is_null()) return util::ok();
    if (!doc.is_object()) {
      return util::make_error(where + ": a document must be a mapping (a Kubernetes object)");
    }
    std::string text_of_doc;
    try {
      text_of_doc = doc.dump();
    } catch (const json::exception& e) {
      return util::make_error(where + ": " + e.what());
    }
    doc = json();
    return flatten(text_of_doc, where, 0, on_object);
  };
  YamlReader reader(text, origin);
  TOLLGATE_TRY_STATUS(reader.read_each([&](json doc) -> util::Status {
    ++count;
    if (held) TOLLGATE_TRY_STATUS(emit(std::move(*held), origin + "#" + std::to_string(count - 1)));
    held = std::move(doc);
    return util::ok();
  }));
  if (!held) return util::ok();
  return emit(std::move(*held), count > 1 ? origin + "#" + std::to_string(count) : origin);
}

std::string_view trim_left(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  return s;
}

}  // namespace

util::Result<json> yaml_to_json(std::string_view text, const std::string& origin) {
  YamlReader reader(text, origin);
  auto docs = reader.read_all();
  if (!docs.ok()) return docs.error();
  if (docs->size() > 1) return util::make_error(origin + ": more than one document");
  return docs->empty() ? json() : std::move((*docs)[0]);
}

util::Status for_each_object(std::string_view text, const std::string& origin,
                             const ObjectFn& on_object) {
  const std::string_view t = trim_left(text);
  if (!t.empty() && (t.front() == '{' || t.front() == '[')) {
    bool not_json = false;
    auto r = for_each_json_object(t, origin, on_object, not_json);
    if (!not_json) return r;
    // Not plain JSON: it may still be YAML in flow style; report the JSON error if not.
    YamlReader check(text, origin);
    if (!check.read_all().ok()) return r.error();
  }
  return for_each_yaml_object(text, origin, on_object);
}

util::Result<std::vector<Document>> parse_documents(std::string_view text,
                                                    const std::string& origin) {
  std::vector<Document> out;
  TOLLGATE_TRY_STATUS(for_each_object(text, origin, [&](const ObjectText& o) -> util::Status {
    json j = json::parse(o.json, nullptr, false);
    if (j.is_discarded()) return util::make_error(o.origin + ": not valid JSON");
    out.push_back(Document{std::move(j), o.origin});
    return util::ok();
  }));
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
      const auto n = parse_path_normalization(s);
      if (!n) {
        return util::make_error("mesh.pathNormalization: \"" + s +
                                "\" is not BASE, MERGE_SLASHES, DECODE_AND_MERGE_SLASHES or NONE");
      }
      m.path_normalization = *n;
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

// The fake API server's field and label selectors, parsed and matched as kube-apiserver's
// fields.ParseSelector and labels.Parse do for the forms tests and kubectl send.
#include <algorithm>
#include <regex>
#include <string>
#include <string_view>

#include "test/support/fake_apiserver_internal.h"
#include "tollgate/util/strings.h"

namespace tollgate::testing::fake {
namespace {

// Splits at `sep` where not escaped by a backslash (fields) or inside parentheses (labels).
std::vector<std::string> split_terms(const std::string& s, bool escapes) {
  std::vector<std::string> out;
  std::string cur;
  int depth = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char ch = s[i];
    if (escapes && ch == '\\' && i + 1 < s.size()) {
      cur += ch;
      cur += s[++i];
      continue;
    }
    if (!escapes && ch == '(') ++depth;
    if (!escapes && ch == ')') --depth;
    if (ch == ',' && depth == 0) {
      out.push_back(cur);
      cur.clear();
      continue;
    }
    cur += ch;
  }
  out.push_back(cur);
  return out;
}

std::string unescape(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) ++i;
    out += s[i];
  }
  return out;
}

std::vector<std::string> split_path(const std::string& key) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (;;) {
    const auto dot = key.find('.', start);
    out.push_back(key.substr(start, dot - start));
    if (dot == std::string::npos) return out;
    start = dot + 1;
  }
}

// A field's value as the selector compares it: a string as it is, a number or boolean as JSON
// writes it, anything absent or null as "".
std::string field_value(const json& object, const std::vector<std::string>& path) {
  const json* at = &object;
  for (const std::string& part : path) {
    if (!at->is_object()) return "";
    auto it = at->find(part);
    if (it == at->end()) return "";
    at = &*it;
  }
  if (at->is_string()) return at->get<std::string>();
  if (at->is_null()) return "";
  return at->dump();
}

bool valid_label_key(std::string_view key) {
  static const std::regex kKey(R"(^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$)");
  return std::regex_match(key.begin(), key.end(), kKey);
}

}  // namespace

std::optional<Selector> Selector::parse(const std::string& field_selector,
                                        const std::string& label_selector, std::string& error) {
  Selector s;
  if (!util::trim(field_selector).empty()) {
    for (const std::string& term : split_terms(field_selector, true)) {
      std::size_t i = 0, op_len = 0;
      bool equal = true;
      for (; i < term.size(); ++i) {
        if (term[i] == '\\') {
          ++i;
          continue;
        }
        if (term.compare(i, 2, "!=") == 0) {
          equal = false;
          op_len = 2;
        } else if (term.compare(i, 2, "==") == 0) {
          op_len = 2;
        } else if (term[i] == '=') {
          op_len = 1;
        }
        if (op_len > 0) break;
      }
      const std::string key(util::trim(std::string_view(term).substr(0, i)));
      if (op_len == 0 || key.empty()) {
        error = "invalid selector: '" + field_selector + "'; can't understand '" + term + "'";
        return std::nullopt;
      }
      s.fields_.push_back(Field{split_path(key), unescape(term.substr(i + op_len)), equal});
    }
  }
  if (!util::trim(label_selector).empty()) {
    static const std::regex kSet(R"(^(\S+)\s+(in|notin)\s*\(([^()]*)\)$)");
    for (const std::string& raw : split_terms(label_selector, false)) {
      const std::string term(util::trim(raw));
      Label l;
      std::smatch m;
      if (!term.empty() && term[0] == '!') {
        l.key = std::string(util::trim(std::string_view(term).substr(1)));
        l.op = Op::kDoesNotExist;
      } else if (std::regex_match(term, m, kSet)) {
        l.key = m[1].str();
        l.op = m[2].str() == "in" ? Op::kIn : Op::kNotIn;
        for (const std::string& v : split_terms(m[3].str(), false)) {
          l.values.emplace_back(util::trim(v));
        }
      } else if (const auto ne = term.find("!="); ne != std::string::npos) {
        l.key = std::string(util::trim(std::string_view(term).substr(0, ne)));
        l.op = Op::kNotEquals;
        l.values.emplace_back(util::trim(std::string_view(term).substr(ne + 2)));
      } else if (const auto eq = term.find('='); eq != std::string::npos) {
        const std::size_t len = term.compare(eq, 2, "==") == 0 ? 2 : 1;
        l.key = std::string(util::trim(std::string_view(term).substr(0, eq)));
        l.op = Op::kEquals;
        l.values.emplace_back(util::trim(std::string_view(term).substr(eq + len)));
      } else {
        l.key = term;
        l.op = Op::kExists;
      }
      if (!valid_label_key(l.key)) {
        error = "unable to parse requirement: invalid label selector term '" + term + "'";
        return std::nullopt;
      }
      s.labels_.push_back(std::move(l));
    }
  }
  return s;
}

bool Selector::matches(const json& object) const {
  for (const Field& f : fields_) {
    if ((field_value(object, f.path) == f.value) != f.equal) return false;
  }
  if (labels_.empty()) return true;
  static const json kNone = json::object();
  const json* labels = &kNone;
  if (auto m = object.find("metadata"); m != object.end() && m->is_object()) {
    if (auto l = m->find("labels"); l != m->end() && l->is_object()) labels = &*l;
  }
  for (const Label& l : labels_) {
    auto it = labels->find(l.key);
    const bool has = it != labels->end() && it->is_string();
    const std::string value = has ? it->get<std::string>() : "";
    const bool listed = std::find(l.values.begin(), l.values.end(), value) != l.values.end();
    bool ok = false;
    switch (l.op) {
      case Op::kEquals:
        ok = has && value == l.values[0];
        break;
      case Op::kNotEquals:
        ok = !has || value != l.values[0];
        break;
      case Op::kIn:
        ok = has && listed;
        break;
      case Op::kNotIn:
        ok = !has || !listed;
        break;
      case Op::kExists:
        ok = has;
        break;
      case Op::kDoesNotExist:
        ok = !has;
        break;
    }
    if (!ok) return false;
  }
  return true;
}

bool Selector::matches_text(const std::string& text) const {
  if (empty()) return true;
  const json object = json::parse(text, nullptr, false);
  return !object.is_discarded() && matches(object);
}

}  // namespace tollgate::testing::fake

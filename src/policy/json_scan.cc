#include "tollgate/policy/json_scan.h"

#include <cstring>
#include <vector>

namespace tollgate::policy::json_scan {
namespace {

constexpr std::size_t kNpos = std::string_view::npos;

bool is_space(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

std::size_t skip_space(std::string_view t, std::size_t i) {
  while (i < t.size() && is_space(t[i])) ++i;
  return i;
}

util::Error error_at(std::string_view t, std::size_t i, const std::string& what) {
  std::size_t line = 1, column = 1;
  for (std::size_t k = 0; k < i && k < t.size(); ++k) {
    if (t[k] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
  return util::make_error("line " + std::to_string(line) + ", column " + std::to_string(column) +
                          ": " + what);
}

// The bytes that end a run of plain string content: '"', '\\' and control characters.
struct StringStops {
  bool stop[256] = {};
  constexpr StringStops() {
    for (int c = 0; c < 0x20; ++c) stop[c] = true;
    stop[static_cast<unsigned char>('"')] = true;
    stop[static_cast<unsigned char>('\\')] = true;
  }
};
constexpr StringStops kStringStops;

// Past the string token starting at t[i] == '"', or kNpos (with `why`) when it is malformed.
std::size_t string_end(std::string_view t, std::size_t i, const char*& why) {
  ++i;
  const std::size_t n = t.size();
  const auto* p = reinterpret_cast<const unsigned char*>(t.data());
  for (;;) {
    while (i + 4 <= n && !kStringStops.stop[p[i]] && !kStringStops.stop[p[i + 1]] &&
           !kStringStops.stop[p[i + 2]] && !kStringStops.stop[p[i + 3]]) {
      i += 4;
    }
    while (i < n && !kStringStops.stop[p[i]]) ++i;
    if (i >= n) {
      why = "a string is not terminated";
      return kNpos;
    }
    const char c = t[i];
    if (c == '"') return i + 1;
    if (c != '\\') {
      why = "a control character in a string";
      return kNpos;
    }
    if (i + 1 >= n) {
      why = "a string is not terminated";
      return kNpos;
    }
    switch (t[i + 1]) {
      case '"':
      case '\\':
      case '/':
      case 'b':
      case 'f':
      case 'n':
      case 'r':
      case 't':
        i += 2;
        break;
      case 'u':
        if (i + 5 >= n || !is_hex(t[i + 2]) || !is_hex(t[i + 3]) || !is_hex(t[i + 4]) ||
            !is_hex(t[i + 5])) {
          why = "a \\u escape needs four hex digits";
          return kNpos;
        }
        i += 6;
        break;
      default:
        why = "an invalid escape in a string";
        return kNpos;
    }
  }
}

// Past the number or literal (true, false, null) at t[i], or kNpos.
std::size_t scalar_end(std::string_view t, std::size_t i) {
  const char c = t[i];
  if (c == 't' || c == 'f' || c == 'n') {
    const std::string_view lit = c == 't' ? "true" : c == 'f' ? "false" : "null";
    return t.substr(i, lit.size()) == lit ? i + lit.size() : kNpos;
  }
  const std::size_t n = t.size();
  std::size_t k = i;
  if (k < n && t[k] == '-') ++k;
  if (k >= n || !is_digit(t[k])) return kNpos;
  if (t[k] == '0') {
    ++k;
  } else {
    while (k < n && is_digit(t[k])) ++k;
  }
  if (k < n && t[k] == '.') {
    ++k;
    if (k >= n || !is_digit(t[k])) return kNpos;
    while (k < n && is_digit(t[k])) ++k;
  }
  if (k < n && (t[k] == 'e' || t[k] == 'E')) {
    ++k;
    if (k < n && (t[k] == '+' || t[k] == '-')) ++k;
    if (k >= n || !is_digit(t[k])) return kNpos;
    while (k < n && is_digit(t[k])) ++k;
  }
  return k;
}

// Past the string token at t[i] == '"' in text already validated: the next quote that no
// backslash escapes.
std::size_t validated_string_end(std::string_view t, std::size_t i) {
  for (++i;;) {
    const void* q = std::memchr(t.data() + i, '"', t.size() - i);
    if (q == nullptr) return t.size();
    const auto k = static_cast<std::size_t>(static_cast<const char*>(q) - t.data());
    std::size_t j = k;
    while (j > i && t[j - 1] == '\\') --j;
    if ((k - j) % 2 == 0) return k + 1;
    i = k + 1;
  }
}

// Past the value at t[i] in text already validated: only strings and nesting are followed.
std::size_t validated_value_end(std::string_view t, std::size_t i) {
  const char first = t[i];
  if (first == '"') return validated_string_end(t, i);
  if (first != '{' && first != '[') {  // a number or a literal
    while (i < t.size() && !is_space(t[i]) && t[i] != ',' && t[i] != '}' && t[i] != ']') ++i;
    return i;
  }
  int depth = 0;
  while (i < t.size()) {
    const char c = t[i];
    if (c == '"') {
      i = validated_string_end(t, i);
      continue;
    }
    ++i;
    if (c == '{' || c == '[') {
      ++depth;
    } else if ((c == '}' || c == ']') && --depth == 0) {
      return i;
    }
  }
  return i;
}

// After "{" or ",": whitespace, a key string, whitespace, ':'. Returns past the ':'.
util::Result<std::size_t> member_key(std::string_view t, std::size_t i) {
  i = skip_space(t, i);
  if (i >= t.size() || t[i] != '"') return error_at(t, i, "expected a string key");
  const char* why = "";
  const std::size_t end = string_end(t, i, why);
  if (end == kNpos) return error_at(t, i, why);
  i = skip_space(t, end);
  if (i >= t.size() || t[i] != ':') return error_at(t, i, "expected ':'");
  return i + 1;
}

void append_utf8(std::string& out, unsigned cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

unsigned hex4(std::string_view s) {
  unsigned v = 0;
  for (char c : s.substr(0, 4)) {
    v <<= 4;
    v |= static_cast<unsigned>(is_digit(c) ? c - '0' : (c | 0x20) - 'a' + 10);
  }
  return v;
}

}  // namespace

util::Result<std::size_t> value_end(std::string_view t, std::size_t i) {
  std::vector<char> open;  // the closers still expected: '}' or ']'
  for (;;) {
    // A value starts here.
    i = skip_space(t, i);
    if (i >= t.size()) return error_at(t, i, "expected a value");
    const char c = t[i];
    bool complete = true;  // the value ends here (not a container left open)
    if (c == '{' || c == '[') {
      if (open.size() >= kMaxDepth) return error_at(t, i, "nested too deeply");
      open.push_back(c == '{' ? '}' : ']');
      const std::size_t k = skip_space(t, i + 1);
      if (k < t.size() && t[k] == open.back()) {
        open.pop_back();
        i = k + 1;
      } else if (c == '{') {
        auto after = member_key(t, i + 1);
        if (!after.ok()) return after.error();
        i = *after;
        complete = false;
      } else {
        i = i + 1;
        complete = false;
      }
    } else if (c == '"') {
      const char* why = "";
      const std::size_t end = string_end(t, i, why);
      if (end == kNpos) return error_at(t, i, why);
      i = end;
    } else {
      const std::size_t end = scalar_end(t, i);
      if (end == kNpos) return error_at(t, i, "expected a value");
      i = end;
    }
    if (!complete) continue;
    // After a value: close containers, or go on to the next member or element.
    for (;;) {
      if (open.empty()) return i;
      i = skip_space(t, i);
      if (i >= t.size())
        return error_at(t, i, std::string("expected ',' or '") + open.back() + "'");
      if (t[i] == open.back()) {
        open.pop_back();
        ++i;
        continue;
      }
      if (t[i] != ',') return error_at(t, i, std::string("expected ',' or '") + open.back() + "'");
      if (open.back() == '}') {
        auto after = member_key(t, i + 1);
        if (!after.ok()) return after.error();
        i = *after;
      } else {
        ++i;
      }
      break;
    }
  }
}

util::Status for_each_member(std::string_view t, const MemberFn& on_member, bool validated) {
  std::size_t i = skip_space(t, 0);
  if (i >= t.size() || t[i] != '{') return error_at(t, i, "expected an object");
  i = skip_space(t, i + 1);
  if (i < t.size() && t[i] == '}') {
    i = i + 1;
  } else {
    for (;;) {
      if (i >= t.size() || t[i] != '"') return error_at(t, i, "expected a string key");
      const char* why = "";
      const std::size_t key_end = validated ? validated_string_end(t, i) : string_end(t, i, why);
      if (key_end == kNpos) return error_at(t, i, why);
      TOLLGATE_TRY(key, string_value(t.substr(i, key_end - i)));
      i = skip_space(t, key_end);
      if (i >= t.size() || t[i] != ':') return error_at(t, i, "expected ':'");
      const std::size_t start = skip_space(t, i + 1);
      if (start >= t.size()) return error_at(t, start, "expected a value");
      TOLLGATE_TRY(end, validated ? util::Result<std::size_t>(validated_value_end(t, start))
                                  : value_end(t, start));
      TOLLGATE_TRY_STATUS(on_member(key, t.substr(start, end - start)));
      i = skip_space(t, end);
      if (i < t.size() && t[i] == '}') {
        ++i;
        break;
      }
      if (i >= t.size() || t[i] != ',') return error_at(t, i, "expected ',' or '}'");
      i = skip_space(t, i + 1);
    }
  }
  if (skip_space(t, i) != t.size()) return error_at(t, i, "unexpected text after the object");
  return util::ok();
}

util::Status for_each_element(std::string_view t, const ElementFn& on_element, bool validated) {
  std::size_t i = skip_space(t, 0);
  if (i >= t.size() || t[i] != '[') return error_at(t, i, "expected an array");
  i = skip_space(t, i + 1);
  if (i < t.size() && t[i] == ']') {
    i = i + 1;
  } else {
    for (;;) {
      const std::size_t start = skip_space(t, i);
      if (start >= t.size()) return error_at(t, start, "expected a value");
      TOLLGATE_TRY(end, validated ? util::Result<std::size_t>(validated_value_end(t, start))
                                  : value_end(t, start));
      TOLLGATE_TRY_STATUS(on_element(t.substr(start, end - start)));
      i = skip_space(t, end);
      if (i < t.size() && t[i] == ']') {
        ++i;
        break;
      }
      if (i >= t.size() || t[i] != ',') return error_at(t, i, "expected ',' or ']'");
      i = i + 1;
    }
  }
  if (skip_space(t, i) != t.size()) return error_at(t, i, "unexpected text after the array");
  return util::ok();
}

util::Result<std::string> string_value(std::string_view token) {
  if (token.size() < 2 || token.front() != '"' || token.back() != '"') {
    return util::make_error("not a string");
  }
  const std::string_view body = token.substr(1, token.size() - 2);
  if (body.find('\\') == kNpos) return std::string(body);
  std::string out;
  for (std::size_t i = 0; i < body.size(); ++i) {
    if (body[i] != '\\') {
      out += body[i];
      continue;
    }
    const char e = body[++i];
    switch (e) {
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'n':
        out += '\n';
        break;
      case 'r':
        out += '\r';
        break;
      case 't':
        out += '\t';
        break;
      case 'u': {
        unsigned cp = hex4(body.substr(i + 1));
        i += 4;
        // A surrogate pair: \uD83D\uDE00.
        if (cp >= 0xd800 && cp < 0xdc00 && i + 6 < body.size() && body[i + 1] == '\\' &&
            body[i + 2] == 'u') {
          const unsigned lo = hex4(body.substr(i + 3));
          if (lo >= 0xdc00 && lo < 0xe000) {
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            i += 6;
          }
        }
        append_utf8(out, cp);
        break;
      }
      default:  // " \ /
        out += e;
    }
  }
  return out;
}

}  // namespace tollgate::policy::json_scan

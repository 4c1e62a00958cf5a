// DecisionTable indexes and matchers that do not depend on a request.
#include <algorithm>
#include <cstring>

#include "tollgate/compile/table.h"

namespace tollgate::compile {

std::uint64_t hash_bytes(std::string_view s, std::uint64_t seed) {
  // FNV-1a with a final avalanche (splitmix64); not cryptographic.
  std::uint64_t h = 0xcbf29ce484222325ULL ^ (seed * 0x9e3779b97f4a7c15ULL);
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebULL;
  h ^= h >> 31;
  return h;
}

void FlatStringSet::build(const std::vector<std::string>& keys) {
  keys_ = keys;
  hashes_.clear();
  for (const auto& k : keys_) hashes_.push_back(hash_bytes(k));
  std::size_t cap = 8;
  while (cap < keys_.size() * 2) cap <<= 1;
  slots_.assign(cap, 0);
  mask_ = cap - 1;
  for (std::size_t i = 0; i < keys_.size(); ++i) {
    std::uint64_t h = hashes_[i] & mask_;
    while (slots_[h] != 0) h = (h + 1) & mask_;
    slots_[h] = static_cast<std::uint32_t>(i + 1);
  }
}

bool FlatStringSet::contains(std::string_view key, std::uint64_t hash) const {
  if (keys_.empty()) return false;
  std::uint64_t h = hash & mask_;
  while (true) {
    const std::uint32_t s = slots_[h];
    if (s == 0) return false;
    if (hashes_[s - 1] == hash && keys_[s - 1] == key) return true;
    h = (h + 1) & mask_;
  }
}

PathTemplate PathTemplate::parse(std::string_view t) {
  PathTemplate pt;
  std::string lit;
  std::size_t i = 0;
  while (i < t.size()) {
    if (t.compare(i, 4, "{**}") == 0) {
      if (!lit.empty()) pt.tokens.push_back({Token::kLiteral, std::move(lit)});
      lit.clear();
      pt.tokens.push_back({Token::kAnyDepth, ""});
      i += 4;
    } else if (t.compare(i, 3, "{*}") == 0) {
      if (!lit.empty()) pt.tokens.push_back({Token::kLiteral, std::move(lit)});
      lit.clear();
      pt.tokens.push_back({Token::kOneSegment, ""});
      i += 3;
    } else {
      lit.push_back(t[i++]);
    }
  }
  if (!lit.empty()) pt.tokens.push_back({Token::kLiteral, std::move(lit)});
  return pt;
}

namespace {

// Envoy uri_template: a segment character (kLiteral class, which includes '=').
bool segment_char(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::strchr("-._~%!$&'()+,;:@=", c) != nullptr && c != '\0';
}

bool template_match(const std::vector<PathTemplate::Token>& toks, std::size_t ti,
                    std::string_view s) {
  if (ti == toks.size()) return s.empty();
  const auto& tok = toks[ti];
  switch (tok.kind) {
    case PathTemplate::Token::kLiteral:
      if (s.substr(0, tok.text.size()) != tok.text) return false;
      return template_match(toks, ti + 1, s.substr(tok.text.size()));
    case PathTemplate::Token::kOneSegment: {
      std::size_t n = 0;
      while (n < s.size() && segment_char(s[n])) ++n;
      for (std::size_t k = n; k >= 1; --k) {
        if (template_match(toks, ti + 1, s.substr(k))) return true;
      }
      return false;
    }
    case PathTemplate::Token::kAnyDepth: {
      std::size_t n = 0;
      while (n < s.size() && (segment_char(s[n]) || s[n] == '/')) ++n;
      for (std::size_t k = n + 1; k-- > 0;) {
        if (template_match(toks, ti + 1, s.substr(k))) return true;
      }
      return false;
    }
  }
  return false;
}

bool glob_match(const std::vector<Glob::Token>& toks, std::size_t ti, std::string_view s) {
  if (ti == toks.size()) return s.empty();
  const auto& tok = toks[ti];
  switch (tok.kind) {
    case Glob::Token::kLiteral:
      if (s.substr(0, tok.text.size()) != tok.text) return false;
      return glob_match(toks, ti + 1, s.substr(tok.text.size()));
    case Glob::Token::kAnyChar:
      return !s.empty() && glob_match(toks, ti + 1, s.substr(1));
    case Glob::Token::kAnyRun:
      if (ti + 1 == toks.size()) return true;
      for (std::size_t k = 0; k <= s.size(); ++k) {
        if (glob_match(toks, ti + 1, s.substr(k))) return true;
      }
      return false;
    case Glob::Token::kAnyRunNoSlash:
      for (std::size_t k = 0; k <= s.size(); ++k) {
        if (glob_match(toks, ti + 1, s.substr(k))) return true;
        if (k < s.size() && s[k] == '/') break;
      }
      return false;
  }
  return false;
}

void push_literal(Glob& g, std::string_view text) {
  if (text.empty()) return;
  if (!g.tokens.empty() && g.tokens.back().kind == Glob::Token::kLiteral) {
    g.tokens.back().text += text;
  } else {
    g.tokens.push_back({Glob::Token::kLiteral, std::string(text)});
  }
}

// Istio namespace regex ".*/ns/<v, '*' -> '.*'>/.*" as a glob over the SPIFFE URI.
Glob namespace_glob(std::string_view v) {
  Glob g;
  g.tokens.push_back({Glob::Token::kAnyRun, ""});
  push_literal(g, "/ns/");
  for (char c : v) {
    if (c == '*')
      g.tokens.push_back({Glob::Token::kAnyRun, ""});
    else if (c == '.')
      g.tokens.push_back({Glob::Token::kAnyChar, ""});
    else
      push_literal(g, std::string_view(&c, 1));
  }
  push_literal(g, "/");
  g.tokens.push_back({Glob::Token::kAnyRun, ""});
  return g;
}

// Trust domain with '*': "spiffe://a[^/]*b/.*" over the principal (no "spiffe://").
Glob trust_domain_glob(std::string_view v) {
  Glob g;
  for (char c : v) {
    if (c == '*')
      g.tokens.push_back({Glob::Token::kAnyRunNoSlash, ""});
    else
      push_literal(g, std::string_view(&c, 1));
  }
  push_literal(g, "/");
  g.tokens.push_back({Glob::Token::kAnyRun, ""});
  return g;
}

// Istio StringMatcher: "*" -> .+, "*x" suffix, "x*" prefix, else exact.
void add_string_value(ValueIndex& ix, const std::string& v, std::vector<std::string>& exact,
                      bool star_is_presence) {
  if (v == "*") {
    (star_is_presence ? ix.present : ix.any_nonempty) = true;
  } else if (v.front() == '*') {
    ix.suffixes.push_back(v.substr(1));
  } else if (v.back() == '*') {
    ix.prefixes.push_back(v.substr(0, v.size() - 1));
  } else {
    exact.push_back(v);
  }
}

ValueIndex::IssSub iss_sub_for(const std::string& value, bool& exact_pair, std::string& key) {
  // requestPrincipalGenerator: split at the last '/', the issuer may be a URL.
  using M = ValueIndex::Match;
  const auto idx = value.rfind('/');
  const bool found = idx != std::string::npos;
  std::string iss = found ? value.substr(0, idx) : value;
  std::string sub = found ? value.substr(idx + 1) : "";
  exact_pair = false;
  if (value == "*") return {M::kNonEmpty, M::kNonEmpty, "", ""};
  if (value.front() == '*') {
    if (!found) return {M::kNonEmpty, M::kSuffix, "", value.substr(1)};
    if (iss == "*") return {M::kNonEmpty, M::kExact, "", sub};
    return {M::kSuffix, M::kExact, iss.substr(1), sub};
  }
  if (value.back() == '*') {
    if (!found) return {M::kPrefix, M::kNonEmpty, value.substr(0, value.size() - 1), ""};
    if (sub == "*") return {M::kExact, M::kNonEmpty, iss, ""};
    return {M::kExact, M::kPrefix, iss, sub.substr(0, sub.size() - 1)};
  }
  exact_pair = true;
  key = iss;
  key.push_back('\0');
  key += sub;
  return {};
}

// Adds one non-empty value of a predicate on `attr` to its index (exact values to `exact`).
void add_value(policy::Attr attr, const std::string& v, ValueIndex& ix,
               std::vector<std::string>& exact) {
  using policy::Attr;
  switch (attr) {
    case Attr::kSourcePrincipal:
    case Attr::kAudiences:
    case Attr::kPresenter:
    case Attr::kClaim:
    case Attr::kSni:
      add_string_value(ix, v, exact, false);
      return;
    case Attr::kPath:
      if (policy::contains_path_template(v)) {
        ix.templates.push_back(PathTemplate::parse(v));
      } else {
        add_string_value(ix, v, exact, false);
      }
      return;
    case Attr::kHost:
    case Attr::kMethod:
    case Attr::kHeader:
      add_string_value(ix, v, exact, true);
      return;
    case Attr::kPort:
      ix.ports.push_back(std::stoi(v));
      return;
    case Attr::kSourceNamespace:
      if (v.find_first_of("*./") == std::string::npos) {
        exact.push_back(v);
      } else {
        ix.globs.push_back(namespace_glob(v));
      }
      return;
    case Attr::kSourceServiceAccount: {
      auto slash = v.find('/');
      ix.service_accounts.emplace_back(v.substr(0, slash), v.substr(slash + 1));
      return;
    }
    case Attr::kSourceTrustDomain:
      if (v == "*") {
        ix.any_nonempty = true;
      } else if (v.find('*') == std::string::npos) {
        exact.push_back(v);
      } else {
        ix.globs.push_back(trust_domain_glob(v));
      }
      return;
    case Attr::kSourceIp:
    case Attr::kRemoteIp:
    case Attr::kDestinationIp: {
      auto c = policy::parse_cidr(v);
      if (!c.ok()) return;
      if (c->prefix == c->addr.bits()) {
        exact.emplace_back(c->addr.key());
      } else {
        ix.cidrs.push_back(*c);
      }
      return;
    }
    case Attr::kRequestPrincipal: {
      bool pair = false;
      std::string key;
      auto m = iss_sub_for(v, pair, key);
      if (pair) {
        exact.push_back(std::move(key));
      } else {
        ix.iss_sub.push_back(std::move(m));
      }
      return;
    }
    case Attr::kMetadata:
      if (v.size() >= 2 && v.front() == '[' && v.back() == ']') {
        ix.list_values.push_back(v.substr(1, v.size() - 2));
      } else {
        add_string_value(ix, v, exact, false);
      }
      return;
  }
}

void build_index(Predicate& pr) {
  ValueIndex& ix = pr.index;
  ix = ValueIndex{};
  std::vector<std::string> exact;
  for (const auto& v : pr.values) {
    if (v.empty()) {
      exact.push_back(v);
    } else {
      add_value(pr.attr, v, ix, exact);
    }
  }
  ix.exact.build(exact);
}

}  // namespace

bool PathTemplate::matches(std::string_view path) const { return template_match(tokens, 0, path); }

bool Glob::matches(std::string_view s) const { return glob_match(tokens, 0, s); }

bool TableRule::empty_rule() const {
  return principals.size() == 1 && principals[0].all.empty() && permissions.size() == 1 &&
         permissions[0].all.empty();
}

void DecisionTable::build_indexes() {
  auto rules = [](std::vector<TableRule>& rs) {
    for (auto& r : rs) {
      for (auto& c : r.principals) {
        for (auto& p : c.all) build_index(p);
      }
      for (auto& c : r.permissions) {
        for (auto& p : c.all) build_index(p);
      }
    }
  };
  for (auto& s : custom) rules(s.rules);
  rules(deny);
  rules(allow);
  rules(audit);
  rules(dry_run_deny);
  rules(dry_run_allow);
}

DecisionTable TableBuilder::finish() && {
  table_.build_indexes();
  table_.hash = content_hash(table_);
  return std::move(table_);
}

}  // namespace tollgate::compile

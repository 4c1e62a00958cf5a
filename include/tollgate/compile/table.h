// DecisionTable: everything a sidecar needs to decide for one workload, compiled from the
// policies that apply to it. Made by a TableBuilder, whose finish() builds the lookup indexes
// and the hash once; immutable afterwards and safe to share between threads for reading.
// Wire format: docs/decision-table.md.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tollgate/policy/model.h"
#include "tollgate/policy/values.h"

namespace tollgate::compile {

inline constexpr const char* kTableApiVersion = "tollgate.dev/v1alpha1";

std::uint64_t hash_bytes(std::string_view s, std::uint64_t seed = 0);

// Open-addressing hash set of strings: exact values are looked up, not scanned.
class FlatStringSet {
 public:
  void build(const std::vector<std::string>& keys);
  bool contains(std::string_view key) const { return contains(key, hash_bytes(key)); }
  // `hash` must be hash_bytes(key): lets a request hash an attribute once for all rules.
  bool contains(std::string_view key, std::uint64_t hash) const;
  bool empty() const { return keys_.empty(); }

 private:
  std::vector<std::string> keys_;
  std::vector<std::uint64_t> hashes_;  // parallel to keys_: compared before the bytes
  std::vector<std::uint32_t> slots_;   // index+1 into keys_, 0 = empty
  std::uint64_t mask_ = 0;
};

// A path template ("/a/{*}/b/{**}") compiled to tokens.
struct PathTemplate {
  struct Token {
    enum Kind : std::uint8_t { kLiteral, kOneSegment, kAnyDepth } kind;
    std::string text;
  };
  std::vector<Token> tokens;
  static PathTemplate parse(std::string_view t);
  bool matches(std::string_view path) const;
};

// A pattern made of literals, '.' (one char), '.*' (any run) and '[^/]*': the subset of
// regular expressions Istio generates for namespaces and trust domains.
struct Glob {
  struct Token {
    enum Kind : std::uint8_t { kLiteral, kAnyChar, kAnyRun, kAnyRunNoSlash } kind;
    std::string text;
  };
  std::vector<Token> tokens;
  bool matches(std::string_view s) const;
};

// The lookup structure for the values of one predicate, built by finalize().
struct ValueIndex {
  FlatStringSet exact;
  std::vector<std::string> prefixes;
  std::vector<std::string> suffixes;
  bool any_nonempty = false;  // '*' as regex .+
  bool present = false;       // '*' as header presence
  std::vector<PathTemplate> templates;
  std::vector<Glob> globs;
  std::vector<policy::Cidr> cidrs;  // non-host CIDRs; host addresses go to `exact`
  // serviceAccounts: (namespace, name) pairs
  std::vector<std::pair<std::string, std::string>> service_accounts;
  // requestPrincipals: non-exact (iss, sub) matchers; exact pairs go to `exact` as iss\0sub
  enum class Match : std::uint8_t { kExact, kPrefix, kSuffix, kNonEmpty };
  struct IssSub {
    Match iss_kind = Match::kExact, sub_kind = Match::kExact;
    std::string iss, sub;  // the text compared (unused for kNonEmpty)
  };
  std::vector<IssSub> iss_sub;
  // metadata list-contains values ("[v]")
  std::vector<std::string> list_values;
  std::vector<int> ports;  // destination ports, compared as numbers
};

// One tested attribute: true iff any value matches (NOT of that if negate).
struct Predicate {
  policy::Attr attr{};
  std::string arg;  // header name; claim path or "filter\0key", '\0'-separated
  bool negate = false;
  bool http_only = false;
  std::vector<std::string> values;  // canonical values, as in the wire format
  ValueIndex index;                 // built by finalize()
};

// All predicates hold (empty = matches everything).
struct Conjunction {
  std::vector<Predicate> all;
};

struct TableRule {
  std::string name;    // Envoy policy name: ns[<ns>]-policy[<name>]-rule[<i>]
  std::string policy;  // "<ns>/<name>"
  int rule = 0;
  policy::Action action = policy::Action::kAllow;
  // ALLOW only: the rule uses an HTTP-only attribute, so Istio drops it on TCP chains.
  bool tcp_dropped = false;
  std::vector<Conjunction> principals;   // any
  std::vector<Conjunction> permissions;  // any
  bool empty_rule() const;               // `{}`: one empty principal and one empty permission
};

// The CUSTOM filters: one per provider (in provider-name order), or one fail-closed stage
// whose matches are denied (unknown provider, or several providers without the flag).
struct CustomStage {
  std::string provider;
  std::string type;  // "http" | "grpc" | "" (unknown)
  bool deny_on_match = false;
  std::string deny_reason;
  std::vector<TableRule> rules;
};

struct DecisionTable {
  std::string namespace_;
  policy::PathNormalization path_normalization = policy::PathNormalization::kBase;
  std::vector<std::string> policies;  // every applicable policy, "ns/name", sorted
  bool has_allow = false;             // an enforced ALLOW policy applies
  std::vector<CustomStage> custom;
  std::vector<TableRule> deny;
  std::vector<TableRule> allow;
  std::vector<TableRule> audit;
  std::vector<TableRule> dry_run_deny;
  std::vector<TableRule> dry_run_allow;
  bool has_dry_run_allow = false;
  // Notes for people: rules skipped and why ("ns/name rule 2: unknown condition key ...").
  std::vector<std::string> notes;
  std::string hash;  // content hash of the wire form (hex); the ETag

 private:
  friend class TableBuilder;
  void build_indexes();  // every ValueIndex, from the predicates' values
};

// The one way to a usable table with rules: fill draft(), then std::move(builder).finish()
// builds every index and the content hash, exactly once, and hands the table over. (A
// default-constructed DecisionTable has no rules and needs neither.)
class TableBuilder {
 public:
  TableBuilder() = default;
  explicit TableBuilder(DecisionTable draft) : table_(std::move(draft)) {}
  DecisionTable& draft() { return table_; }
  DecisionTable finish() &&;

 private:
  DecisionTable table_;
};

// hex of the hash of the table's wire form without its "hash" field (wire.cc).
std::string content_hash(const DecisionTable& t);

}  // namespace tollgate::compile

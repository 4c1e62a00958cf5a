// evaluate(table, request) -> Decision, with Istio's order CUSTOM, DENY, ALLOW. Pure and
// allocation-free on the hot path; thread-safe for concurrent readers of one table.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "tollgate/compile/table.h"
#include "tollgate/eval/request.h"

namespace tollgate::eval {

enum class Cause : std::uint8_t {
  kRejected,        // Envoy rejects the request before authorization
  kCustomDenied,    // a CUSTOM rule matched and its provider denied
  kCustomNoAnswer,  // a CUSTOM rule matched and no provider answer was given: fail closed
  kBadCustom,       // a CUSTOM rule of a broken CUSTOM setup matched: denied
  kDenyMatched,     // a DENY rule matched
  kNoAllowPolicy,   // no ALLOW policy applies: allowed
  kAllowMatched,    // an ALLOW rule matched
  kNoAllowMatched,  // ALLOW policies apply, none matched: denied
};

struct Decision {
  bool allowed = false;
  Cause cause = Cause::kNoAllowMatched;
  const compile::TableRule* rule = nullptr;  // the deciding rule, null for a default
  const compile::CustomStage* stage = nullptr;
  const compile::TableRule* audit = nullptr;  // first matching AUDIT rule
  // Dry-run: what the shadow policies would have decided (only if any exist).
  bool dry_run_evaluated = false;
  bool dry_run_allowed = true;
  const compile::TableRule* dry_run_rule = nullptr;
};

Decision evaluate(const compile::DecisionTable& t, const PreparedRequest& r);
Decision evaluate(const compile::DecisionTable& t, const Request& r);

// Does `rule` match? (Exposed for explanations and tests.) `custom_stage` hides JWT data.
bool rule_matches(const compile::TableRule& rule, const PreparedRequest& r, bool custom_stage);

// Why `rule` does not match `r`, for people: e.g. "request.method is \"POST\", not one of
// [GET]". Empty when the rule matches.
std::string mismatch(const compile::TableRule& rule, const PreparedRequest& r,
                     bool custom_stage = false);

// A sentence a person can read.
std::string reason(const compile::DecisionTable& t, const Decision& d, const PreparedRequest& r);

// The decision shape of docs/api.md#the-decision: {"decision","policy","action","rule",
// "reason"} plus "audit" and "dryRun" when they apply.
nlohmann::json decision_json(const compile::DecisionTable& t, const Decision& d,
                             const PreparedRequest& r);

// Appends decision_json(t, d, r).dump() to `out`, byte for byte, without building a DOM.
void append_decision_json(std::string& out, const compile::DecisionTable& t, const Decision& d,
                          const PreparedRequest& r);

}  // namespace tollgate::eval

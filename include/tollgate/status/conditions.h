// The conditions tollgate writes on each AuthorizationPolicy's status (issue: status on the
// policy object): what it made of the policy, in KEP-1623 form, under its own type prefix so
// that istiod's conditions and validationMessages are left alone. Pure functions;
// thread-safe.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tollgate/policy/model.h"

namespace tollgate::status {

inline constexpr std::string_view kTypePrefix = "tollgate.dev/";
inline constexpr std::string_view kAccepted = "tollgate.dev/Accepted";
inline constexpr std::string_view kEffective = "tollgate.dev/Effective";
inline constexpr std::size_t kMaxMessage = 1024;  // bytes of a condition's message

struct Condition {
  std::string type, status, reason, message;  // status: "True" | "False"
  bool operator==(const Condition&) const = default;
};

// tollgate.dev/Accepted: True (Compiled) for a policy without errors, else False (Invalid,
// compiled to fail closed) with the first errors. tollgate.dev/Effective: False
// (ShadowedByDeny) when lint's TG101 finds that a deny-all DENY policy makes it unable to
// allow anything, else True (Effective). `lint` is lint_policy()'s answer for `p`.
std::vector<Condition> desired_conditions(const policy::Policy& p,
                                          std::span<const policy::Finding> lint);

// `current` (status.conditions as read; may be null or hold others' conditions) with `want`
// set: every condition of another type is kept as it is; ours carry `generation` as
// observedGeneration, and keep their lastTransitionTime unless their status flips (then
// `now`, RFC 3339). Our types not in `want` are removed. The whole list to write, or nullopt
// when the object already says all of this.
std::optional<nlohmann::json> merge_conditions(const nlohmann::json& current,
                                               const std::vector<Condition>& want,
                                               std::int64_t generation, std::string_view now);

// The JSON merge patch for the /status subresource: the whole conditions list (the CRD's
// list is atomic), preconditioned on the resourceVersion read.
nlohmann::json status_patch(const nlohmann::json& conditions, std::string_view resource_version);

}  // namespace tollgate::status

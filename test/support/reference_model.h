// A deliberately simple interpreter of Istio's AuthorizationPolicy semantics, written from
// docs/semantics.md without tollgate's compiler or matchers: plain loops over the policy JSON.
// It covers what the property and differential tests generate (no CUSTOM, no dry-run, default
// mesh). Pure functions; thread-safe.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace tollgate::testing {

struct RefDecision {
  // Set when the request cannot be evaluated at all (a requestPrincipal that contradicts the
  // JWT payload): tollgate's request parser must refuse it too.
  std::optional<std::string> invalid;
  bool allowed = false;
  std::optional<std::string> policy;  // "ns/name" of the deciding rule's policy
};

RefDecision reference_decide(const std::vector<nlohmann::json>& policies,
                             const nlohmann::json& workload, const nlohmann::json& request);

}  // namespace tollgate::testing

// Compilation: the policies that apply to a workload -> its DecisionTable, following Istio's
// generation rules (docs/semantics.md#how-a-rule-matches). Pure functions, no I/O; thread-safe.
#pragma once

#include <nlohmann/json.hpp>
#include <span>
#include <string>

#include "tollgate/compile/table.h"
#include "tollgate/policy/model.h"
#include "tollgate/util/result.h"

namespace tollgate::compile {

// Does `p` apply to workload `w`? (namespace scope, selector, targetRefs.)
bool applies_to(const policy::Policy& p, const policy::Workload& w, const policy::MeshConfig& m);

// Compiles the applicable subset of `policies` for `w`. The result is finalized and hashed.
DecisionTable compile_table(std::span<const policy::Policy> policies, const policy::Workload& w,
                            const policy::MeshConfig& mesh);
DecisionTable compile_table(std::span<const policy::Policy* const> policies,
                            const policy::Workload& w, const policy::MeshConfig& mesh);
// Compiles exactly `policies` (already known to apply) for a workload in namespace `ns`.
DecisionTable compile_selected(std::span<const policy::Policy* const> policies,
                               const std::string& ns, const policy::MeshConfig& mesh);

// Wire format (docs/decision-table.md). to_json is deterministic: identical tables give
// byte-identical dumps.
nlohmann::json to_json(const DecisionTable& t);
util::Result<DecisionTable> table_from_json(const nlohmann::json& j);

}  // namespace tollgate::compile

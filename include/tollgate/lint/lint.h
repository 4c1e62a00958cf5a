// Lint: findings about policies that cannot do what their author meant, given the workloads,
// services and service accounts known (from manifests or the cluster). One function per
// finding code; lint_policy() answers for one policy, lint_all() for a whole set. Pure;
// thread-safe.
#pragma once

#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "tollgate/policy/model.h"

namespace tollgate::lint {

// What is known of the cluster. Every pointer and span must outlive the call.
struct Context {
  std::span<const policy::Policy* const> policies;  // all of them: TG101 looks at the others
  std::span<const policy::Workload> workloads;
  std::span<const policy::Service> services;                // for the protocol of each port
  const std::set<std::string>* service_accounts = nullptr;  // "ns/name"; null = unknown
  const std::set<std::string>* namespaces = nullptr;        // null = unknown
  policy::MeshConfig mesh;
};

// The lint findings of `p` (not its validation findings, which p.findings holds), in code
// order: TG101, TG102, TG109, TG107/TG108, then per rule TG103, TG105, TG104.
std::vector<policy::Finding> lint_policy(const policy::Policy& p, const Context& c);

// TG101 judged on selectors alone, whatever workloads exist: the finding when a deny-all DENY
// policy among `policies` selects every workload the ALLOW policy `p` can select (so that it
// can never take effect), else nullopt. The status writer's tollgate.dev/Effective: pod churn
// must not change it.
std::optional<policy::Finding> shadowed_by_deny(const policy::Policy& p,
                                                std::span<const policy::Policy* const> policies,
                                                const policy::MeshConfig& mesh);

// Every policy's validation findings, then its lint findings, sorted by object.
std::vector<policy::Finding> lint_all(const Context& c);

}  // namespace tollgate::lint

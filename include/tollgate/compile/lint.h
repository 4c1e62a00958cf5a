// Lint: findings about policies that cannot do what their author meant, given the workloads
// and service accounts known (from manifests or the cluster). Pure; thread-safe.
#pragma once

#include <set>
#include <span>
#include <string>
#include <vector>

#include "tollgate/policy/model.h"

namespace tollgate::compile {

struct LintInput {
  std::span<const policy::Policy> policies;
  std::span<const policy::Workload> workloads;
  std::span<const policy::Service> services;                // for the protocol of each port
  const std::set<std::string>* service_accounts = nullptr;  // "ns/name"; null = unknown
  const std::set<std::string>* namespaces = nullptr;        // null = unknown
  policy::MeshConfig mesh;
};

// Every parser/validation finding of the policies, then the lint findings, sorted by object.
std::vector<policy::Finding> lint(const LintInput& in);

}  // namespace tollgate::compile

// The manifest source: files and directories of Kubernetes YAML/JSON read as if they were a
// cluster (policies, pods, workload controllers' pod templates, service accounts,
// namespaces). Pure loading; thread-compatible.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "tollgate/policy/model.h"
#include "tollgate/policy/parse.h"

namespace tollgate::source {

struct ClusterState {
  std::vector<policy::Policy> policies;
  std::vector<std::string> policy_origins;       // parallel to policies: "file.yaml#2"
  std::vector<std::string> policy_fingerprints;  // parallel to policies
  std::vector<policy::Workload> workloads;
  std::vector<policy::Service> services;
  std::set<std::string> service_accounts;  // "ns/name"
  std::set<std::string> namespaces;
  std::vector<std::string> errors;  // files or documents that could not be read
  std::size_t ignored = 0;          // objects of kinds tollgate does not use
};

// Adds one Kubernetes object. A Deployment, StatefulSet, DaemonSet, ReplicaSet, Job or
// CronJob stands for one pod named after it, with its pod template's labels and account.
void add_object(ClusterState& s, const nlohmann::json& object, const std::string& origin);

// The manifest files named by `paths`: files as given, directories searched recursively for
// *.yaml, *.yml, *.json (hidden entries skipped), each directory's files sorted.
std::vector<std::string> list_files(const std::vector<std::string>& paths,
                                    std::vector<std::string>& errors);
// Reads and parses one manifest file (at most 16 MiB).
util::Result<std::vector<policy::Document>> read_file(const std::string& path);

// Reads files, and directories (recursively, *.yaml, *.yml, *.json, sorted) into `s`.
void load_paths(ClusterState& s, const std::vector<std::string>& paths);

}  // namespace tollgate::source

// The oracle for index, watcher and soak tests: what every pod's table should be, compiled
// from scratch from a plain list of objects, and what a published snapshot says it is.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "tollgate/compile/compile.h"
#include "tollgate/index/objects.h"
#include "tollgate/publish/snapshot.h"

namespace tollgate::testing {

// "ns/pod" -> the table's ETag, for every pod that is a workload.
inline std::map<std::string, std::string> from_scratch(
    const std::vector<index::PolicyObject>& policies, const std::vector<index::PodObject>& pods,
    const policy::MeshConfig& mesh) {
  std::vector<policy::Policy> all;
  for (const auto& p : policies) all.push_back(*p.policy);
  std::map<std::string, std::string> out;
  for (const auto& pod : pods) {
    if (!pod.is_workload()) continue;
    policy::Workload w;
    w.namespace_ = pod.namespace_;
    w.name = pod.name;
    w.labels.insert(pod.labels.begin(), pod.labels.end());
    w.service_account = pod.service_account;
    out[pod.namespace_ + "/" + pod.name] = "\"" + compile::compile_table(all, w, mesh).hash + "\"";
  }
  return out;
}

inline std::map<std::string, std::string> published(const publish::Snapshot& s) {
  std::map<std::string, std::string> out;
  for (const auto& [ns, view] : s.namespaces) {
    for (const auto& e : view->pods) out[ns + "/" + e.pod->name] = e.table ? e.table->etag : "";
  }
  return out;
}

// The keys on which two such maps differ, for a failure message.
inline std::string diff(const std::map<std::string, std::string>& got,
                        const std::map<std::string, std::string>& want) {
  std::string out;
  for (const auto& [k, v] : got) {
    auto it = want.find(k);
    if (it == want.end())
      out += k + ": published but should not exist\n";
    else if (it->second != v)
      out += k + ": published " + v + ", expected " + it->second + "\n";
  }
  for (const auto& [k, v] : want) {
    if (!got.contains(k)) out += k + ": missing\n";
  }
  return out;
}

}  // namespace tollgate::testing

// Cluster objects as the index sees them, and the events that carry them from a source (the
// API server watchers or the manifest directory) to the index thread. Plain values: built on
// a source's thread, moved through the queue, owned by the index thread afterwards.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "tollgate/policy/model.h"
#include "tollgate/policy/parse.h"
#include "tollgate/util/result.h"

namespace tollgate::index {

enum class Kind : std::uint8_t { kPolicy, kPod, kServiceAccount, kNamespace };
inline constexpr int kKindCount = 4;
const char* kind_name(Kind k);  // "AuthorizationPolicy", "Pod", ...

// What the status writer needs of a policy object besides its meaning (null from a manifest).
struct PolicyMeta {
  std::string uid, resource_version;
  std::int64_t generation = 0;
  std::string conditions;  // status.conditions as read (every writer's), JSON; "" when absent
};

struct PolicyObject {
  std::shared_ptr<const policy::Policy> policy;
  // What the policy means, as text (spec and dry-run annotation): an update that leaves it
  // unchanged (a relist, a label edit) recompiles nothing.
  std::string fingerprint;
  std::shared_ptr<const PolicyMeta> meta;  // from the API server; the index ignores it
};

struct PodObject {
  bool operator==(const PodObject&) const = default;
  std::string namespace_, name;
  std::string uid;  // metadata.uid; empty for a controller's pod template
  std::vector<std::pair<std::string, std::string>> labels;  // sorted by key
  std::string service_account = "default";
  std::vector<std::string> ips;  // status.podIPs, else status.podIP
  std::string phase;
  bool deleting = false;      // metadata.deletionTimestamp set
  bool host_network = false;  // spec.hostNetwork: not a mesh workload
  std::vector<policy::ContainerPort> ports;
  // Succeeded/Failed pods, pods being deleted and hostNetwork pods are not workloads.
  bool is_workload() const {
    return !deleting && !host_network && phase != "Succeeded" && phase != "Failed";
  }
};

// A ServiceAccount (namespace and name) or a Namespace (name only).
struct NamedObject {
  std::string namespace_, name;
};

using Object = std::variant<PolicyObject, PodObject, NamedObject>;
std::string object_key(const Object& o);  // "ns/name" (or "name" for a namespace)

struct Event {
  enum class Type : std::uint8_t {
    kUpsert,   // objects added or modified
    kDelete,   // objects removed
    kReplace,  // the complete current set of `kind` (a list or relist); marks it synced
    kHealth,   // a source's state changed: `healthy`, `message`
  };
  Kind kind = Kind::kPod;
  Type type = Type::kUpsert;
  std::vector<Object> objects;
  bool healthy = true;
  std::string message;
};

// The decoders: one rule per kind, whichever way an object arrives (a list item, a watch
// event's object, or a manifest file's document). They never throw; an error names the object
// (when its name could be read) and the field.
struct DecodeOptions {
  // The API server always sets metadata.namespace; a manifest may leave it out, and then
  // means this namespace (kubectl's default). Empty: metadata.namespace is required.
  std::string_view default_namespace;
};
// A Pod: metadata.name, namespace, labels (strings), deletionTimestamp; spec.serviceAccountName
// (else the deprecated spec.serviceAccount, which the API server copies into it; else
// "default"), hostNetwork, containers[].ports[] (containerPort, name); status.phase, podIPs
// (else podIP).
util::Result<PodObject> decode_pod(std::string_view json, const DecodeOptions& options = {});
// The pod that stands for a workload controller (Deployment, StatefulSet, DaemonSet,
// ReplicaSet and Job: spec.template; CronJob: spec.jobTemplate.spec.template): named after the
// controller, its template decoded by the Pod rule.
util::Result<PodObject> decode_pod_template(std::string_view json, std::string_view kind,
                                            const DecodeOptions& options = {});
bool is_pod_controller(std::string_view kind);
util::Result<PolicyObject> decode_policy(std::string_view json, const DecodeOptions& options = {});
util::Result<NamedObject> decode_named(std::string_view json, bool namespaced,
                                       const DecodeOptions& options = {});
// A policy from an already-parsed object.
PolicyObject policy_object(const nlohmann::json& object);

}  // namespace tollgate::index

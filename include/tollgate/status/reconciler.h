// What the status writer knows and wants: every AuthorizationPolicy as last read (uid,
// generation, resourceVersion, every writer's status.conditions), the conditions tollgate
// wants on it, and which policies' objects do not say that yet. Fed the policy events the
// cluster source produces and the objects the API server answers writes with. Pure (no I/O,
// no clock); not thread-safe: owned by the status writer's thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "tollgate/index/objects.h"
#include "tollgate/policy/model.h"
#include "tollgate/status/conditions.h"

namespace tollgate::status {

// One write to make: the merge patch for `path` (the /status subresource), and what it
// changes of ours (for Events).
struct Plan {
  std::string key;   // "ns/name"
  std::string path;  // /apis/<group>/<version>/namespaces/<ns>/authorizationpolicies/<name>
  std::string uid, api_version, resource_version;
  std::string patch;  // the JSON merge patch, as sent
  std::vector<Condition> want;
  std::vector<Condition> before;  // our conditions on the object now (status and reason only)
};

class Reconciler {
 public:
  explicit Reconciler(policy::MeshConfig mesh) : mesh_(std::move(mesh)) {}

  // A policy event from the cluster source (other kinds are ignored). A replace forgets the
  // policies it does not list.
  void apply(const index::Event& e);
  // The object as the API server answered a write or a read of `key` (a whole
  // AuthorizationPolicy). Ignored when older than what is known (resourceVersion).
  void observed(const std::string& key, const nlohmann::json& object);
  // The API server answered 404 for `key`: forgotten, and the watch events about that object
  // still on their way (it was read before it went) are ignored until its deletion arrives.
  void gone(const std::string& key);
  // Forgets `key` (a deletion).
  void forget(const std::string& key);
  // Every known policy is to be looked at again (on becoming the leader).
  void mark_all();
  // The policies to look at, in key order; taking them clears the marks.
  std::vector<std::string> take_marked();
  // The write that makes `key`'s object say what we want, stamped `now` where a condition
  // flips; nullopt when it already says so (timestamps aside) or the policy is unknown.
  std::optional<Plan> plan(const std::string& key, std::string_view now) const;

  std::size_t size() const { return policies_.size(); }
  bool known(const std::string& key) const { return policies_.contains(key); }

 private:
  struct Entry {
    std::shared_ptr<const policy::Policy> policy;
    std::string fingerprint;
    index::PolicyMeta meta;
    nlohmann::json conditions;  // meta.conditions, parsed
    std::vector<Condition> want;
  };
  void upsert(const index::PolicyObject& p);
  void recompute();  // every policy's wanted conditions, after a change of meaning

  policy::MeshConfig mesh_;
  std::map<std::string, Entry> policies_;
  std::set<std::string> marked_;
  std::map<std::string, std::string> gone_;  // key -> uid of an object answered 404
  bool meaning_changed_ = false;
};

}  // namespace tollgate::status

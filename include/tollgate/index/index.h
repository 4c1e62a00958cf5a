// The index: every store of cluster state, the selector index between policies and pods,
// table groups (pods that must get the same table) and what changed since the last snapshot.
// Owned by the index thread, its only writer; not thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "tollgate/index/objects.h"
#include "tollgate/policy/model.h"

namespace tollgate::index {

// A pod's metadata.uid as a 128-bit digest: 16 bytes in place of a 36-character string on
// the heap, for every pod (the uids are the API server's random UUIDs, so digests of two
// different uids do not meet). The empty uid's digest is all zeros.
struct UidDigest {
  std::uint64_t a = 0, b = 0;
  bool operator==(const UidDigest&) const = default;
};
UidDigest uid_digest(std::string_view uid);

// A pod as published: immutable, shared between the index and snapshots. `shape` (namespace,
// labels, service account) is interned: pods of one ReplicaSet share it.
struct PodInfo {
  std::string name;
  UidDigest uid;  // of metadata.uid: who may read the pod's table (docs/security.md)
  std::shared_ptr<const policy::Workload> shape;
  std::string ips;  // status.podIPs joined with ',' (one IPv4 address fits in place)
  template <typename F>
  void for_each_ip(F f) const {
    std::string_view rest = ips;
    while (!rest.empty()) {
      const auto comma = rest.find(',');
      f(rest.substr(0, comma));
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
};

// Pods with the same namespace and the same applicable policies get one table. The set of
// applicable policies decides the table completely, so this is the sharing key.
struct Group {
  std::uint64_t id = 0;
  std::string key;  // namespace and policy keys
  std::string namespace_;
  std::vector<std::shared_ptr<const policy::Policy>> policies;  // sorted by key
  std::size_t pods = 0;                                         // pods in the group
  std::size_t shapes = 0;  // shapes in the group (it lives while this is not zero)
};

// An interned shape and the group its pods belong to (a shape decides the group).
struct ShapeRec {
  std::string key;
  std::shared_ptr<const policy::Workload> shape;
  std::size_t pods = 0;
  Group* group = nullptr;
};

struct IndexStats {
  std::size_t pods = 0, policies = 0, groups = 0, shapes = 0;
  std::uint64_t events = 0, ignored_pods = 0;
};

class Index {
 public:
  explicit Index(policy::MeshConfig mesh);
  ~Index();
  Index(const Index&) = delete;
  Index& operator=(const Index&) = delete;

  void apply(Event event);

  // Whether every kind has had its first complete list.
  bool synced() const;
  bool kind_synced(Kind k) const { return synced_[static_cast<int>(k)]; }

  // What changed since the last take_changes(): namespaces whose pod -> table mapping may
  // differ, groups that are new or whose policies changed (to compile), groups gone.
  struct Changes {
    std::set<std::string> namespaces;
    std::set<std::uint64_t> groups;
    std::set<std::uint64_t> removed_groups;
    bool policies = false;                    // the policy set changed
    std::set<std::string> policy_namespaces;  // in these namespaces
    bool other = false;                       // service accounts, namespaces, readiness
    bool empty() const {
      return namespaces.empty() && groups.empty() && removed_groups.empty() && !policies && !other;
    }
  };
  const Changes& changes() const { return changes_; }
  Changes take_changes();

  // Reading (for the snapshot builder, on the index thread).
  struct PodRec {
    std::shared_ptr<const PodInfo> info;
    ShapeRec* shape = nullptr;
    const Group* group() const { return shape->group; }
  };
  // Keyed by a view of info->name (the node is re-keyed when info is replaced).
  using PodMap = std::map<std::string_view, PodRec, std::less<>>;
  const PodMap* pods(const std::string& ns) const;
  const Group* group(std::uint64_t id) const;
  const std::map<std::string, std::shared_ptr<const policy::Policy>>& policies() const {
    return all_policies_;
  }
  const std::set<std::string>& service_accounts() const { return service_accounts_; }
  const std::set<std::string>& namespaces() const { return namespace_names_; }
  const policy::MeshConfig& mesh() const { return mesh_; }
  IndexStats stats() const;
  struct Health {
    bool healthy = false;  // until the source says otherwise
    std::string message = "not yet listed";
    std::chrono::system_clock::time_point since{};  // when it became what it is
  };
  const Health& health(Kind k) const { return health_[static_cast<int>(k)]; }

 private:
  struct PolicyRec {
    std::shared_ptr<const policy::Policy> policy;
    std::string fingerprint;
  };
  struct NsState {
    PodMap pods;
    std::map<std::string, PolicyRec> policies;  // by name
    // The namespace's shapes and groups: a policy change looks at its namespace only.
    std::unordered_set<ShapeRec*> shapes;
    std::unordered_set<Group*> groups;
  };

  void upsert_pod(PodObject pod);
  void delete_pod(const std::string& ns, const std::string& name);
  void upsert_policy(PolicyObject p);
  void delete_policy(const std::string& ns, const std::string& name);
  void policy_changed(const std::string& ns, const std::string& name, const policy::Policy* before,
                      const policy::Policy* after);
  void replace(Kind kind, std::vector<Object>& objects);

  ShapeRec* intern(PodObject& pod);
  void release(ShapeRec* shape);
  Group* group_for(const policy::Workload& w);
  void assign(ShapeRec& shape, Group* g);

  policy::MeshConfig mesh_;
  std::unordered_map<std::string, NsState> ns_;
  std::map<std::string, std::shared_ptr<const policy::Policy>> all_policies_;  // "ns/name"
  std::set<std::string> service_accounts_;                                     // "ns/name"
  std::set<std::string> namespace_names_;
  std::unordered_map<std::string, std::unique_ptr<ShapeRec>> shapes_;
  std::unordered_map<std::string, std::unique_ptr<Group>> groups_by_key_;
  std::unordered_map<std::uint64_t, Group*> groups_by_id_;
  std::uint64_t next_group_ = 1;
  bool synced_[kKindCount] = {};
  Health health_[kKindCount];
  Changes changes_;
  std::uint64_t events_ = 0, ignored_pods_ = 0;
};

}  // namespace tollgate::index

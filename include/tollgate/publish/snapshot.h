// Snapshots: the immutable view of every workload's decision table that the HTTP threads
// read, and the builder that makes the next one from the index. A Snapshot is immutable and
// thread-safe to read; SnapshotBuilder is owned by the index thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <iterator>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tollgate/compile/table.h"
#include "tollgate/index/index.h"

namespace tollgate::publish {

// One compiled table, shared by every pod of its group and by successive snapshots.
struct TableEntry {
  std::uint64_t group = 0;
  compile::DecisionTable table;
  std::string wire;  // the wire JSON (docs/decision-table.md)
  std::string etag;  // "\"<content hash>\""
};

struct PodEntry {
  std::shared_ptr<const index::PodInfo> pod;
  const TableEntry* table = nullptr;  // kept alive by the view's `tables`
};

struct NamespaceView {
  std::vector<PodEntry> pods;                             // sorted by pod name
  std::vector<std::shared_ptr<const TableEntry>> tables;  // every table the pods point to
  const PodEntry* find(std::string_view pod) const;
};

// The cluster's policies by "namespace/name", read as a std::map is (sorted by key, find,
// size), and kept in one shard per namespace: a change copies that namespace's policies, not
// all of them. Immutable once published.
class PolicyMap {
 public:
  using Shard = std::map<std::string, std::shared_ptr<const policy::Policy>, std::less<>>;
  using value_type = Shard::value_type;
  class Iterator {
   public:
    using iterator_category = std::forward_iterator_tag;
    using value_type = PolicyMap::value_type;
    using difference_type = std::ptrdiff_t;
    using pointer = const value_type*;
    using reference = const value_type&;
    Iterator() = default;
    reference operator*() const { return *inner_; }
    pointer operator->() const { return &*inner_; }
    Iterator& operator++();
    Iterator operator++(int) {
      auto copy = *this;
      ++*this;
      return copy;
    }
    bool operator==(const Iterator& o) const {
      return outer_ == o.outer_ && (outer_ == end_ || inner_ == o.inner_);
    }

   private:
    friend class PolicyMap;
    using Outer = std::map<std::string, std::shared_ptr<const Shard>, std::less<>>::const_iterator;
    Iterator(Outer outer, Outer end, Shard::const_iterator inner)
        : outer_(outer), end_(end), inner_(inner) {}
    Outer outer_, end_;
    Shard::const_iterator inner_;
  };
  using const_iterator = Iterator;  // the names std::map's readers use
  using iterator = Iterator;

  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  const_iterator begin() const;
  const_iterator end() const;
  const_iterator find(std::string_view key) const;
  // The namespace's policies (keys "ns/name"); an empty shard removes the namespace.
  void set_namespace(const std::string& ns, std::shared_ptr<const Shard> shard);

 private:
  // By namespace + "/": shards come in the order of their keys.
  std::map<std::string, std::shared_ptr<const Shard>, std::less<>> shards_;
  std::size_t size_ = 0;
};

struct Snapshot {
  std::uint64_t revision = 0;
  bool synced = false;  // every kind has been listed once
  std::chrono::system_clock::time_point published_at;
  policy::MeshConfig mesh;
  std::map<std::string, std::shared_ptr<const NamespaceView>, std::less<>> namespaces;
  // Pod IP -> the pod, in kIpShards shards by a hash of the IP, each a flat vector sorted by
  // IP (then namespace and name). A publish rebuilds only the shards whose pods changed; the
  // others are shared with the previous snapshot. Entries view the PodInfos of this
  // snapshot's namespace views, which keep them alive.
  struct IpEntry {
    std::string_view ip;
    const index::PodInfo* pod = nullptr;
  };
  using IpShard = std::vector<IpEntry>;
  static constexpr std::size_t kIpShards = 1024;
  using IpIndex = std::vector<std::shared_ptr<const IpShard>>;  // kIpShards, never null
  static std::size_t ip_shard(std::string_view ip);
  std::shared_ptr<const IpIndex> by_ip;
  std::shared_ptr<const PolicyMap> policies;
  std::shared_ptr<const std::set<std::string>> service_accounts;  // "ns/name"
  std::shared_ptr<const std::set<std::string>> namespace_names;
  std::size_t pods = 0, tables = 0;
  // Each source kind's state (AuthorizationPolicy, Pod, ServiceAccount, Namespace), for
  // readiness and staleness: an agent can tell how fresh the data is.
  struct SourceHealth {
    std::string kind;
    bool healthy = false;
    std::string message;
    std::chrono::system_clock::time_point since;
  };
  std::vector<SourceHealth> health;
  // How fresh the data is: `now` while every kind is healthy (health changes publish a new
  // snapshot), else the moment the first failing kind stopped being healthy; the epoch if
  // the sources never synced.
  std::chrono::system_clock::time_point fresh_as_of(
      std::chrono::system_clock::time_point now) const;

  const PodEntry* find(std::string_view ns, std::string_view pod) const;
  const PodEntry* find_ip(std::string_view ip) const;
};

// Builds snapshots from the index, compiling only the groups that changed and rebuilding
// only the namespaces whose pods or tables changed; everything else is shared by pointer.
class SnapshotBuilder {
 public:
  struct Result {
    std::shared_ptr<const Snapshot> snapshot;
    std::vector<std::string> changed_pods;  // "ns/pod" whose table (ETag) changed or vanished
    std::size_t compiled = 0;               // tables compiled for this snapshot
  };
  // `changes` is what index.take_changes() returned.
  Result build(const index::Index& index, const index::Index::Changes& changes);

 private:
  // Pods whose IP entries go (the previous snapshot's PodInfo) or come (the next one's).
  struct IpChanges {
    std::vector<const index::PodInfo*> removed, added;
  };
  void compile_tables(const index::Index& index, const index::Index::Changes& changes, Result& out);
  void rebuild_namespace(const index::Index& index, const std::string& ns, Snapshot& next,
                         Result& out, IpChanges& ips) const;
  static std::shared_ptr<const Snapshot::IpIndex> apply(const Snapshot::IpIndex* before,
                                                        const IpChanges& ips);

  std::unordered_map<std::uint64_t, std::shared_ptr<const TableEntry>> tables_;
  std::shared_ptr<const Snapshot> last_;
  std::uint64_t revision_ = 0;
};

std::shared_ptr<const TableEntry> make_table_entry(const index::Group& g,
                                                   const policy::MeshConfig& mesh);

}  // namespace tollgate::publish

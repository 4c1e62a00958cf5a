// Snapshots: the immutable view of every workload's decision table that the HTTP threads
// read, and the builder that makes the next one from the index. A Snapshot is immutable and
// thread-safe to read; SnapshotBuilder is owned by the index thread.
#pragma once

#include <chrono>
#include <cstdint>
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
  std::shared_ptr<const std::map<std::string, std::shared_ptr<const policy::Policy>>> policies;
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

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
  // Pod IP -> the pod, sorted by IP (a flat vector: no allocation per pod). Keys view the
  // PodInfo's ips, which the value keeps alive.
  using IpIndex = std::vector<std::pair<std::string_view, std::shared_ptr<const index::PodInfo>>>;
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
  std::unordered_map<std::uint64_t, std::shared_ptr<const TableEntry>> tables_;
  std::shared_ptr<const Snapshot> last_;
  std::uint64_t revision_ = 0;
};

std::shared_ptr<const TableEntry> make_table_entry(const index::Group& g,
                                                   const policy::MeshConfig& mesh);

}  // namespace tollgate::publish

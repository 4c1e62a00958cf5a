// The manifest source: files and directories of Kubernetes YAML/JSON read as if they were a
// cluster (policies, pods, workload controllers' pod templates, service accounts,
// namespaces). Objects are decoded by the same rules as objects from the API server
// (index/objects.h), so the same pod becomes the same workload whichever way it arrives. A
// JSON file is scanned in place: each object of a large List is decoded from a view of the
// file's bytes, never as a tree of the whole file. Pure loading; thread-compatible.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "tollgate/index/objects.h"
#include "tollgate/policy/model.h"
#include "tollgate/policy/parse.h"

namespace tollgate::source {

// Large enough for an exported cluster of 100,000 pods and 10,000 policies in one JSON List.
inline constexpr std::uint64_t kDefaultMaxFileBytes = std::uint64_t{512} << 20;

struct ReadOptions {
  std::uint64_t max_file_bytes = kDefaultMaxFileBytes;  // a larger file is an error
};

// What one file holds. A document that cannot be decoded makes the whole file unreadable:
// a file is used completely or not at all (a half-read file could lose a DENY policy).
struct FileObjects {
  std::vector<index::PolicyObject> policies;
  std::vector<std::string> policy_origins;  // parallel to policies: "file.yaml#2"
  std::vector<index::PodObject> pods;  // Pods, and one per workload controller; workloads or not
  std::vector<policy::Service> services;
  std::vector<index::NamedObject> service_accounts;
  std::vector<std::string> namespaces;  // Namespace objects, and every object's namespace
  std::size_t ignored = 0;              // objects of kinds tollgate does not use
};

// Reads and decodes one manifest file: at most `max_file_bytes`, JSON or YAML (several
// documents, `kind: List` flattened). Errors name the file and where in it.
util::Result<FileObjects> read_file(const std::string& path, const ReadOptions& options = {});
// The same from text; `origin` names it in errors.
util::Result<FileObjects> read_text(std::string_view text, const std::string& origin);

// The manifest files named by `paths`: files as given, directories searched recursively for
// *.yaml, *.yml, *.json (hidden entries skipped), each directory's files sorted.
std::vector<std::string> list_files(const std::vector<std::string>& paths,
                                    std::vector<std::string>& errors);

// Everything the files hold, for `tollgate check` and `tollgate lint`.
struct ClusterState {
  std::vector<policy::Policy> policies;
  std::vector<std::string> policy_origins;       // parallel to policies: "file.yaml#2"
  std::vector<std::string> policy_fingerprints;  // parallel to policies
  std::vector<policy::Workload> workloads;       // the pods that are workloads
  std::vector<policy::Service> services;
  std::set<std::string> service_accounts;  // "ns/name"
  std::set<std::string> namespaces;
  std::vector<std::string> errors;  // files that could not be read, and why
  std::size_t ignored = 0;          // objects of kinds tollgate does not use
};
void add_objects(ClusterState& s, FileObjects f);

// Reads files, and directories (recursively, *.yaml, *.yml, *.json, sorted) into `s`.
void load_paths(ClusterState& s, const std::vector<std::string>& paths,
                const ReadOptions& options = {});

}  // namespace tollgate::source

// The fake API server's parts shared by its translation units (fake_apiserver.cc serves HTTP,
// fake_writes.cc applies writes, fake_selectors.cc matches selectors, fake_discovery.cc answers
// discovery). Not an interface: tests use support/fake_apiserver.h only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "test/support/fake_apiserver.h"

namespace tollgate::testing::fake {

using json = nlohmann::json;
using Fault = FakeApiServer::Fault;
// Objects are keyed and sorted by (namespace, name), as the real server sorts by etcd key.
using Key = std::pair<std::string, std::string>;
// Objects are stored as JSON text without kind and apiVersion (as a core list item is),
// serialized once when they change: serving a list or a watch only copies bytes, as the real
// server's watch cache does.
using Text = std::shared_ptr<const std::string>;

struct Event {
  std::uint64_t rv;
  const char* type;  // ADDED, MODIFIED, DELETED
  Key key;
  Text text;
  Text prev;  // the object before a MODIFIED or DELETED event (for selector transitions)
};

struct Collection {
  std::string path;  // "/api/v1/pods"
  std::string list_kind, kind, api_version;
  std::string group, version, resource;  // from the path; group "" for /api/v1
  std::string kind_prefix;               // {"kind":"...","apiVersion":"..."
  bool items_carry_kind = false;
  bool namespaced = true;  // false for namespaces, nodes and the like
  bool status_subresource = false;
  std::map<Key, Text> items;
  std::vector<Event> history;  // every mutation, rv ascending; compaction is a watermark
  std::deque<Fault> faults;
  std::deque<Fault> write_faults;
  std::size_t open_watches = 0;
  std::uint64_t bookmark_seq = 0;
  std::uint64_t close_seq = 0;
  std::uint64_t next_uid = 1;
};

// ---- Status bodies, as kube-apiserver phrases them ----

json status_body(int code, const std::string& reason, const std::string& message);
// "pods" or "authorizationpolicies.security.istio.io", as messages name a resource.
std::string qualified_resource(const Collection& c);
// A Status about the object `name` of `c` (NotFound, AlreadyExists, Conflict...), with details.
json object_status(const Collection& c, int code, const std::string& reason,
                   const std::string& name, const std::string& message);
json not_found(const Collection& c, const std::string& name);

// The stored text of an object with the collection's kind and apiVersion first.
std::string with_kind(const Collection& c, const std::string& text);
// Requires the server's lock. Records a mutation: history, items (erased for DELETED).
void record(Collection& c, std::uint64_t rv, const char* type, const Key& key, Text text,
            Text prev);

// ---- Protocol helpers (fake_protocol.cc) ----

std::optional<std::uint64_t> parse_rv(const std::string& s);
// The query's parameters, percent-decoded ('+' is a space); a malformed escape is kept.
std::map<std::string, std::string> parse_query(std::string_view q);
// Whether a read fault applies to a list (watch false) or a watch.
bool applies(Fault fault, bool watch);
// The status and Status body that answer an HTTP status fault; nullopt for the other faults.
std::optional<std::pair<int, json>> fault_status(Fault fault);
// The Status body of an outage (set_unavailable) answering `code`.
json unavailable_body(int code);
// The field errors kube-apiserver's ValidateListOptions finds in sendInitialEvents and
// resourceVersionMatch; none from a server that knows neither (kIgnore).
std::vector<std::string> option_errors(bool watch, bool send_initial_events,
                                       const std::string& match, FakeApiServer::WatchList mode);

// ---- Writes (fake_writes.cc) ----

struct WriteOp {
  std::string method;  // POST, PUT, PATCH, DELETE
  std::string ns, name, subresource;
  std::string content_type;
  std::string body;
};

struct WriteResult {
  int status = 200;
  json body;         // the object (with kind and apiVersion) or a Status
  std::string name;  // the object's name (a create's generateName resolved)
};

// Requires the server's lock. Applies `op` to `c` as kube-apiserver does; a write that changes
// the object bumps `rv` and records an event, a no-op write changes nothing.
WriteResult apply_write(Collection& c, std::uint64_t& rv, const WriteOp& op);
// For upsert(): the generation an object stored over `stored` (null when new) gets in a
// collection with a status subresource.
void manage_generation(const json* stored, json& object);

// ---- Selectors (fake_selectors.cc) ----

// A fieldSelector (a.b=c, a.b==c, a.b!=c; comma-separated, backslash escapes) and a
// labelSelector (k=v, k==v, k!=v, k, !k, k in (a,b), k notin (a,b)), both as one predicate.
class Selector {
 public:
  // nullopt and `error` set when either does not parse.
  static std::optional<Selector> parse(const std::string& field_selector,
                                       const std::string& label_selector, std::string& error);
  bool empty() const { return fields_.empty() && labels_.empty(); }
  bool matches(const json& object) const;
  bool matches_text(const std::string& text) const;  // parses the stored text first

 private:
  struct Field {
    std::vector<std::string> path;
    std::string value;
    bool equal = true;
  };
  enum class Op { kEquals, kNotEquals, kIn, kNotIn, kExists, kDoesNotExist };
  struct Label {
    std::string key;
    Op op = Op::kExists;
    std::vector<std::string> values;
  };
  std::vector<Field> fields_;
  std::vector<Label> labels_;
};

// ---- Discovery (fake_discovery.cc) ----

// Whether `path` is a discovery document (/version, /api, /api/v1, /apis, /apis/<g>,
// /apis/<g>/<v>) that set_unavailable() spares.
bool is_discovery_path(const std::string& path);
// The discovery document at `path` built from the registered collections, or nullopt (404).
std::optional<json> discovery(const std::map<std::string, Collection>& collections,
                              const std::string& path, std::uint16_t port);
// Fills group, version, resource and namespaced from c.path.
void describe_path(Collection& c);

}  // namespace tollgate::testing::fake

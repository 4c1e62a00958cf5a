// The agent's one decision path, shared by every protocol it speaks (the HTTP endpoints for
// nginx, Caddy and Envoy, and gRPC ext_authz): the active table, the engine, and an answer
// that is ALLOW or DENY and never anything else (docs/agent.md#answers-never-fail-open).
// Thread-safe: decide() and refuse() run on any thread while activate() swaps the table.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tollgate/compile/table.h"
#include "tollgate/eval/request.h"
#include "tollgate/util/snapshot_cell.h"

namespace tollgate::agent {

// The table the agent enforces, and where it came from.
struct ActiveTable {
  compile::DecisionTable table;
  std::string etag;       // the controller's ETag, quotes included
  std::string synced_at;  // the controller's X-Tollgate-Synced-At (RFC 3339)
  enum class Source : std::uint8_t { kFetched, kRestored } source = Source::kFetched;
};

// Why a request was denied without the table deciding it.
inline constexpr std::string_view kReasonNoTable = "no-table";
inline constexpr std::string_view kReasonUnreadable = "unreadable-request";

struct Answer {
  bool allowed = false;
  std::string body;  // the decision JSON: {"decision", "policy", "action", "rule", "reason"}
  // X-Tollgate-Decision: ALLOW|DENY, X-Tollgate-Policy: ns/name and X-Tollgate-Rule: N when a
  // policy decided, X-Tollgate-Reason when no table decided (no-table, unreadable-request).
  std::vector<std::pair<std::string, std::string>> headers;
  std::string policy;  // "ns/name" or "" (a default decision, or none)
  int rule = -1;
};

class Authorizer {
 public:
  // Decides `r` with the active table; without one: DENY, reason no-table.
  Answer decide(const eval::Request& r) const;
  // A request the protocol adapter could not read (`why`): DENY, reason unreadable-request.
  static Answer refuse(std::string_view why);

  void activate(std::shared_ptr<const ActiveTable> table);
  std::shared_ptr<const ActiveTable> active() const;

 private:
  util::SnapshotCell<ActiveTable> active_;  // a mutex, not std::atomic<shared_ptr> (TSan)
};

}  // namespace tollgate::agent

// The agent's last good table, kept in its state directory across restarts
// (docs/agent.md#keeping-the-table): written atomically after the table was verified and
// activated, read back at start when the controller cannot be reached. Functions of the
// file system; call them from one thread at a time per directory.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "tollgate/compile/table.h"
#include "tollgate/util/result.h"

namespace tollgate::agent {

inline constexpr const char* kStateFile = "table.json";
inline constexpr std::size_t kMaxStateBytes = std::size_t{64} << 20;

struct PersistedTable {  // NOLINT(bugprone-exception-escape): json() does not throw
  std::string namespace_, pod;
  std::string etag;       // the controller's ETag, quotes included
  std::string synced_at;  // the controller's X-Tollgate-Synced-At
  nlohmann::json table;   // the table's wire form
};

// Writes `t` to <dir>/table.json atomically (util::write_file_atomically).
util::Status save_table(const std::string& dir, const PersistedTable& t);

struct RestoredTable {  // NOLINT(bugprone-exception-escape): json() does not throw
  PersistedTable persisted;
  compile::DecisionTable table;  // read back and its hash verified
};

// Reads <dir>/table.json back. An error names the file and why it cannot be used: missing,
// too large, not JSON, not an agent state file, a table whose hash does not match, or a table
// saved for another pod than ns/pod.
util::Result<RestoredTable> load_table(const std::string& dir, std::string_view ns,
                                       std::string_view pod);

}  // namespace tollgate::agent

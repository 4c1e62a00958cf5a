// `--decision-log FILE`: one JSON line per decided request (docs/agent.md#decision-log):
// {"time", "id", "table", "request", "decision"}. The request is written without header
// values, except for the headers named in the allow-list (`--decision-log-header`); the
// other header names are listed under "redactedHeaders". Thread-safe; each line is one
// write(2) to a file opened with O_APPEND. Rotation works by copy-truncate and by rename: the
// path is checked at most once a second, and reopened when it names another file or none.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "tollgate/agent/authorizer.h"
#include "tollgate/eval/request.h"
#include "tollgate/util/result.h"

namespace tollgate::agent {

class DecisionLog {
 public:
  // Opens (creates, appends to) `path`. `header_allow_list`: names, any case.
  // `check_every`: how often the path is checked for rotation.
  static util::Result<std::unique_ptr<DecisionLog>> open(
      const std::string& path, const std::vector<std::string>& header_allow_list,
      std::chrono::milliseconds check_every = std::chrono::seconds(1));
  ~DecisionLog();
  DecisionLog(const DecisionLog&) = delete;
  DecisionLog& operator=(const DecisionLog&) = delete;

  // `request` is null for a request that could not be read. `table_hash` is "" without one.
  void write(const eval::Request* request, const Answer& answer, const std::string& table_hash);

  // The line write() would append (for tests), without its newline.
  std::string line(const eval::Request* request, const Answer& answer,
                   const std::string& table_hash, std::uint64_t id) const;

 private:
  DecisionLog(std::string path, std::set<std::string> allow, int fd,
              std::chrono::milliseconds check_every);
  void reopen_if_moved();

  const std::string path_;
  const std::set<std::string> allow_;  // lower-case
  const std::chrono::milliseconds check_every_;
  const std::string id_prefix_;  // random per process, so ids from restarts differ
  std::atomic<std::uint64_t> next_id_{1};
  std::mutex mu_;
  int fd_;                                            // guarded by mu_
  std::uint64_t dev_ = 0, ino_ = 0;                   // guarded by mu_
  std::chrono::steady_clock::time_point last_check_;  // guarded by mu_
  bool warned_ = false;                               // guarded by mu_
};

}  // namespace tollgate::agent

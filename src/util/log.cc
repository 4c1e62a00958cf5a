#include "tollgate/util/log.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <mutex>
#include <string>

#include "tollgate/util/json_text.h"
#include "tollgate/util/time.h"

namespace tollgate::util {
namespace {

std::atomic<LogLevel> g_level{LogLevel::kInfo};

constexpr std::string_view kNames[] = {"debug", "info", "warn", "error"};

}  // namespace

void set_log_level(LogLevel level) { g_level.store(level, std::memory_order_relaxed); }

bool log_enabled(LogLevel level) { return level >= g_level.load(std::memory_order_relaxed); }

std::optional<LogLevel> parse_log_level(std::string_view name) {
  if (name == "warning") return LogLevel::kWarn;
  for (std::size_t i = 0; i < std::size(kNames); ++i) {
    if (name == kNames[i]) return static_cast<LogLevel>(i);
  }
  return std::nullopt;
}

void log(LogLevel level, std::string_view msg, std::initializer_list<LogField> fields) {
  if (!log_enabled(level)) return;
  std::string line = "{\"ts\":\"";
  line += rfc3339(std::chrono::system_clock::now());
  line += "\",\"level\":\"";
  line += kNames[static_cast<std::size_t>(level)];
  line += "\",\"msg\":";
  append_json_string(line, msg);
  for (const auto& [k, v] : fields) {
    line += ',';
    append_json_string(line, k);
    line += ':';
    append_json_string(line, v);
  }
  line += "}\n";
  static std::mutex mu;
  std::lock_guard lock(mu);
  // One write per line (stdio could split a long line); retry what a signal interrupts.
  std::string_view rest(line);
  while (!rest.empty()) {
    const ssize_t n = ::write(STDERR_FILENO, rest.data(), rest.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // nowhere to log to
    rest.remove_prefix(static_cast<std::size_t>(n));
  }
}

}  // namespace tollgate::util

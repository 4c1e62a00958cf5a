// Structured logs: one JSON object per line on stderr ({"ts","level","msg", fields...}), at or
// above the level set with set_log_level() (`--log-level`; default info). Thread-safe: the
// level is atomic, each line is written with one write under one lock. Never pass a credential
// as a field.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string_view>
#include <utility>

namespace tollgate::util {

enum class LogLevel : std::uint8_t { kDebug, kInfo, kWarn, kError };

void set_log_level(LogLevel level);
bool log_enabled(LogLevel level);
// "debug", "info", "warn" (or "warning"), "error"; nullopt for anything else.
std::optional<LogLevel> parse_log_level(std::string_view name);

using LogField = std::pair<std::string_view, std::string_view>;

void log(LogLevel level, std::string_view msg, std::initializer_list<LogField> fields = {});

inline void log_debug(std::string_view msg, std::initializer_list<LogField> f = {}) {
  if (log_enabled(LogLevel::kDebug)) log(LogLevel::kDebug, msg, f);
}
inline void log_info(std::string_view msg, std::initializer_list<LogField> f = {}) {
  log(LogLevel::kInfo, msg, f);
}
inline void log_warn(std::string_view msg, std::initializer_list<LogField> f = {}) {
  log(LogLevel::kWarn, msg, f);
}
inline void log_error(std::string_view msg, std::initializer_list<LogField> f = {}) {
  log(LogLevel::kError, msg, f);
}

}  // namespace tollgate::util

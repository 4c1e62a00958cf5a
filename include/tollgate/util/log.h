// Structured logs: one JSON object per line on stderr ({"ts","level","msg", fields...}).
// Thread-safe (one lock around each line). Never pass a credential as a field.
#pragma once

#include <chrono>
#include <cstdio>
#include <ctime>
#include <initializer_list>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

namespace tollgate::util {

enum class LogLevel { kDebug, kInfo, kWarn, kError };

inline LogLevel& log_threshold() {
  static LogLevel level = LogLevel::kInfo;
  return level;
}

inline void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

using LogField = std::pair<std::string_view, std::string_view>;

inline void log(LogLevel level, std::string_view msg, std::initializer_list<LogField> fields = {}) {
  if (level < log_threshold()) return;
  static constexpr const char* kNames[] = {"debug", "info", "warn", "error"};
  const auto now = std::chrono::system_clock::now();
  const auto t = std::chrono::system_clock::to_time_t(now);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char ts[96];
  std::snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  std::string line = "{\"ts\":\"";
  line += ts;
  line += "\",\"level\":\"";
  line += kNames[static_cast<int>(level)];
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
  std::fwrite(line.data(), 1, line.size(), stderr);
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

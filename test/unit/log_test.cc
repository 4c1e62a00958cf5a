#include "tollgate/util/log.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <nlohmann/json.hpp>

#include "tollgate/util/json_text.h"
#include "tollgate/util/time.h"

using namespace tollgate::util;
using nlohmann::json;

TEST_CASE("JSON strings are escaped exactly as nlohmann's dump() escapes them") {
  std::string all;
  for (int c = 1; c < 0x80; ++c) all.push_back(static_cast<char>(c));
  all += "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80";  // 2-, 3- and 4-byte UTF-8
  std::string out;
  append_json_string(out, all);
  CHECK(out == json(all).dump());
  CHECK(json::parse(out).get<std::string>() == all);
  CHECK(is_ascii("plain"));
  CHECK_FALSE(is_ascii("caf\xc3\xa9"));
}

TEST_CASE("bytes that are not UTF-8 become U+FFFD, so a log line is always valid JSON") {
  for (const char* bad :
       {"\xff", "\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82", "\x80"}) {
    std::string out;
    append_json_string(out, std::string("a") + bad + "b");
    INFO(out);
    REQUIRE_NOTHROW(json::parse(out));
    CHECK(out.find("\\ufffd") != std::string::npos);
    CHECK(out.front() == '"');
    CHECK(out.substr(1, 1) == "a");
  }
}

TEST_CASE("rfc3339 writes UTC with milliseconds, also across seconds and before 1970") {
  using namespace std::chrono;
  CHECK(rfc3339(system_clock::time_point{}) == "1970-01-01T00:00:00.000Z");
  CHECK(rfc3339(system_clock::time_point{milliseconds(1764694445123)}) ==
        "2025-12-02T16:54:05.123Z");
  CHECK(rfc3339(system_clock::time_point{milliseconds(1764694446007)}) ==
        "2025-12-02T16:54:06.007Z");
  CHECK(rfc3339(system_clock::time_point{milliseconds(-1)}) == "1969-12-31T23:59:59.999Z");
}

TEST_CASE("log levels parse from their names and filter what is written") {
  CHECK(parse_log_level("debug") == LogLevel::kDebug);
  CHECK(parse_log_level("warning") == LogLevel::kWarn);
  CHECK(parse_log_level("error") == LogLevel::kError);
  CHECK_FALSE(parse_log_level("verbose").has_value());
  set_log_level(LogLevel::kWarn);
  CHECK_FALSE(log_enabled(LogLevel::kInfo));
  CHECK(log_enabled(LogLevel::kError));
  set_log_level(LogLevel::kDebug);
  CHECK(log_enabled(LogLevel::kDebug));
  set_log_level(LogLevel::kInfo);
  CHECK_FALSE(log_enabled(LogLevel::kDebug));
}

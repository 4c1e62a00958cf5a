// Time formatting. Thread-safe (each thread keeps its own cache of the last second formatted).
#pragma once

#include <chrono>
#include <string>

namespace tollgate::util {

// RFC 3339 in UTC with milliseconds: "2026-12-02T17:04:05.123Z".
std::string rfc3339(std::chrono::system_clock::time_point t);

}  // namespace tollgate::util

// Time formatting. Thread-safe (each thread keeps its own cache of the last second formatted).
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace tollgate::util {

// RFC 3339 in UTC with milliseconds: "2026-12-02T17:04:05.123Z".
std::string rfc3339(std::chrono::system_clock::time_point t);

// The same to the second, as Kubernetes writes metav1.Time: "2026-12-02T17:04:05Z".
std::string rfc3339_seconds(std::chrono::system_clock::time_point t);

// Parses an RFC 3339 time: "YYYY-MM-DDTHH:MM:SS", optional fraction, then "Z" or "+HH:MM" /
// "-HH:MM" ('t' and 'z' accepted too). nullopt for anything else, an out-of-range field
// included (leap seconds as well).
std::optional<std::chrono::system_clock::time_point> parse_rfc3339(std::string_view s);

}  // namespace tollgate::util

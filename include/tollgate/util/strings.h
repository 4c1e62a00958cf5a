// Small string helpers used across modules (ASCII only: HTTP, Kubernetes and policy text).
// Pure functions; thread-safe.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::util {

// ASCII lower/upper case, in place or as a copy.
void to_lower(std::string& s);
void to_upper(std::string& s);
std::string lowered(std::string_view s);

// Without leading and trailing spaces, tabs, CRs and LFs.
std::string_view trim(std::string_view s);

// The parts between `sep`s: "a//b" -> {"a", "", "b"}; "" -> {""}. Views into `s`.
std::vector<std::string_view> split(std::string_view s, char sep);

// The value of a hex digit, or -1.
int hex_digit(char c);

// Percent-decoding (RFC 3986 2.1), with '+' as a space when `plus_is_space` (HTML form query
// strings); nullopt for a '%' not followed by two hex digits.
std::optional<std::string> percent_decode(std::string_view s, bool plus_is_space);

}  // namespace tollgate::util

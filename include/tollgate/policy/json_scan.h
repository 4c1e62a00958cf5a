// A JSON scanner for large manifest files: it validates the text (RFC 8259 grammar; UTF-8 is
// checked separately) and finds where values begin and end without building them, so that
// each object of a 100,000-item List can be handed to its decoder as a view of the file's
// bytes. Iterative (nesting costs no stack). Pure functions; thread-safe.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

#include "tollgate/util/result.h"

namespace tollgate::policy::json_scan {

inline constexpr std::size_t kMaxDepth = 1024;

// The offset just past the JSON value that starts in `t` at or after `i` (after whitespace), or an
// error naming the position ("line 3, column 7: expected ',' or '}'").
util::Result<std::size_t> value_end(std::string_view t, std::size_t i);

// Calls `on_member(key, value)` for each member of the object `t` (exactly one object,
// whitespace around it allowed), the key unescaped and the value a view of its text. Stops
// and returns the callback's error if it returns one. `validated`: the text is known to be
// valid JSON (value_end accepted it), so values are skipped without checking them again.
using MemberFn = std::function<util::Status(std::string_view key, std::string_view value)>;
util::Status for_each_member(std::string_view t, const MemberFn& on_member, bool validated = false);

// Calls `on_element(value)` for each element of the array `t`.
using ElementFn = std::function<util::Status(std::string_view value)>;
util::Status for_each_element(std::string_view t, const ElementFn& on_element,
                              bool validated = false);

// A JSON string token (with its quotes, as the scanner found it), unescaped; an error when the
// token is not a string.
util::Result<std::string> string_value(std::string_view token);

}  // namespace tollgate::policy::json_scan

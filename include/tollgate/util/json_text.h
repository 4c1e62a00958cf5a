// Writing JSON text by hand where building a DOM would cost too much (logs, the decision fast
// path). Pure functions; thread-safe.
#pragma once

#include <string>
#include <string_view>

namespace tollgate::util {

// Appends `s` as a JSON string, quotes included, escaped as nlohmann::json::dump() escapes:
// \" \\ \b \f \n \r \t, \u00XX for other control characters, UTF-8 passed through. A byte
// that is not part of valid UTF-8 becomes \ufffd, so the output is always valid JSON.
void append_json_string(std::string& out, std::string_view s);

// True when every byte is below 0x80 (then append_json_string writes what dump() writes).
bool is_ascii(std::string_view s);

}  // namespace tollgate::util

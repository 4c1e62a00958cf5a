// Two things every simdjson caller here needs (header-only; include only where simdjson is
// linked): a padded view of text, and a parse whose exceptions become error codes.
#pragma once

#include <simdjson.h>

#include <string>
#include <string_view>

namespace tollgate::util {

// simdjson needs SIMDJSON_PADDING readable bytes past the input: copies `text` into `buf`
// with padding and returns a view of it (valid while `buf` is unchanged).
inline simdjson::padded_string_view pad(std::string& buf, std::string_view text) {
  buf.assign(text.data(), text.size());
  buf.resize(text.size() + simdjson::SIMDJSON_PADDING, ' ');
  return simdjson::padded_string_view(buf.data(), text.size(), buf.size());
}

// Runs a parse or decoder; simdjson's implicit conversions throw, and that becomes an error
// code too.
template <typename F>
simdjson::error_code guarded(F&& run) {
  try {
    return run();
  } catch (const simdjson::simdjson_error& e) {
    return e.error();
  }
}

}  // namespace tollgate::util

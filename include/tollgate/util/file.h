// Reading and writing whole files, with errors that name the file and the reason. Pure
// functions of the file system; thread-safe.
#pragma once

#include <cstddef>
#include <string>

#include "tollgate/util/result.h"

namespace tollgate::util {

// The whole file, refused when larger than `max_bytes` ("<path>: larger than N bytes, not
// read"); also refuses directories and files that cannot be opened ("<path>: <strerror>").
Result<std::string> read_file(const std::string& path, std::size_t max_bytes);

// Replaces `path` with `bytes` so that a crash at any moment leaves either the old file or the
// new one, never a mix: writes a temporary file in the same directory, fsyncs it, renames it
// over `path`, then fsyncs the directory so the rename itself is durable. On any error the
// temporary file is removed and the old file is untouched.
Status write_file_atomically(const std::string& path, std::string_view bytes);

}  // namespace tollgate::util

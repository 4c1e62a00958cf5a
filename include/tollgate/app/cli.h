// The command line: `tollgate run | eval | check | lint`.
// Runs on the calling thread.
#pragma once

#include <cstddef>
#include <iosfwd>

namespace tollgate::app {

int run_cli(int argc, char** argv);

// `tollgate eval` (docs/api.md#tollgate-eval): stateless evaluation, stdin -> stdout. Returns
// the exit status.
// One input (a line with `jsonl`, else all of `in`) may take at most max_input_bytes; a longer
// line gets an error in its place and is skipped without being held in memory.
inline constexpr std::size_t kDefaultMaxInputBytes = std::size_t{64} << 20;
int run_eval(std::istream& in, std::ostream& out, bool jsonl,
             std::size_t max_input_bytes = kDefaultMaxInputBytes);

}  // namespace tollgate::app

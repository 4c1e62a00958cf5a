// The command line: `tollgate eval | check | lint` (and `run` once the service lands).
// Runs on the calling thread.
#pragma once

#include <iosfwd>

namespace tollgate::app {

int run_cli(int argc, char** argv);

// `tollgate eval`: API.md's stateless evaluation, stdin -> stdout. Returns the exit status.
int run_eval(std::istream& in, std::ostream& out, bool jsonl);

}  // namespace tollgate::app

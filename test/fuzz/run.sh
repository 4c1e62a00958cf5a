#!/usr/bin/env bash
# Runs the fuzzers (libFuzzer, ASan+UBSan) for SECONDS each (default 180); TARGET picks one
# (policy_parser, http_connection or grpc_mapping). New inputs that add coverage can be merged into the
# corpus with, e.g.:
#   build-fuzz/test/fuzz_http_connection -merge=1 test/fuzz/corpus/http <corpus-dir>
exec bash "$(dirname "$0")/../../scripts/dev" fuzz "${1:-180}" ${2:+"$2"}

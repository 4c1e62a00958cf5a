#!/usr/bin/env bash
# Runs the policy-parser fuzzer (libFuzzer, ASan+UBSan) for SECONDS (default 180).
# New inputs that add coverage can be merged into test/fuzz/corpus/policy with:
#   build-fuzz/test/fuzz_policy_parser -merge=1 test/fuzz/corpus/policy <corpus-dir>
exec bash "$(dirname "$0")/../../scripts/dev" fuzz "${1:-180}"

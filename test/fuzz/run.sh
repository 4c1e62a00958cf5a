#!/usr/bin/env bash
# Runs a fuzzer (libFuzzer, ASan+UBSan) for SECONDS (default 180): TARGET policy (the policy
# parser, the default) or grpc (the ext_authz CheckRequest mapping).
# New inputs that add coverage can be merged into the corpus with, for instance:
#   build-fuzz/test/fuzz_policy_parser -merge=1 test/fuzz/corpus/policy <corpus-dir>
#   build-fuzz/test/fuzz_grpc_mapping -merge=1 test/fuzz/corpus/grpc_mapping <corpus-dir>
exec bash "$(dirname "$0")/../../scripts/dev" fuzz "${1:-180}" "${2:-policy}"

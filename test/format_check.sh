#!/usr/bin/env bash
# Every C++ file of the repository (src/, include/, test/, bench/; .h and .cc) is formatted as
# .clang-format says, and no file in src/ is over 600 lines. Prints what clang-format would change; exit status 1 if anything.
# Usage: test/format_check.sh [REPOSITORY_ROOT]. Fix with:
#   git ls-files '*.h' '*.cc' | xargs clang-format -i
set -u
cd "${1:-$(dirname "$0")/..}" || exit 2
command -v clang-format >/dev/null || { echo "format_check: clang-format not found" >&2; exit 2; }

files=()
while IFS= read -r -d '' f; do
  files+=("$f")
done < <(find src include test bench \( -name '*.h' -o -name '*.cc' \) -type f -print0 | sort -z)
((${#files[@]} > 0)) || { echo "format_check: no files found" >&2; exit 2; }
if ! clang-format --dry-run --Werror "${files[@]}"; then
  echo "format_check: the files above are not formatted (clang-format -i them)" >&2
  exit 1
fi
# The house limit on size: no file in src/ over 600 lines (clang-tidy's
# readability-function-size holds functions to 80).
long=$(find src -name '*.cc' -o -name '*.h' | xargs wc -l | awk '$2 != "total" && $1 > 600')
if [[ -n "$long" ]]; then
  echo "format_check: files in src/ over 600 lines (split them by what they do):" >&2
  echo "$long" >&2
  exit 1
fi
echo "format_check: ${#files[@]} files formatted; none in src/ over 600 lines"

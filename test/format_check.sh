#!/usr/bin/env bash
# Every C++ file of the repository (src/, include/, test/, bench/; .h and .cc) is formatted as
# .clang-format says. Prints what clang-format would change; exit status 1 if anything.
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
echo "format_check: ${#files[@]} files formatted"

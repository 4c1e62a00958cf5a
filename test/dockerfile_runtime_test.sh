#!/usr/bin/env bash
# The Docker image's runtime stage installs every shared library the tollgate binary loads:
# the stage runs `scripts/install-deps.sh --runtime`, and each library `ldd` reports belongs to
# a Debian package that the script's runtime list names, that one of those depends on
# (recursively), or that every Debian system has (Priority: required, as in bookworm-slim).
# Usage: dockerfile_runtime_test.sh BINARY REPOSITORY_ROOT
set -euo pipefail
binary=$1 root=$2

grep -q 'install-deps.sh --runtime' "$root/Dockerfile" ||
  { echo "FAIL: the Dockerfile's runtime stage does not run install-deps.sh --runtime"; exit 1; }
# The runtime list: the `runtime=( ... )` array of the install script.
listed=$(sed -n '/^runtime=(/,/^)/p' "$root/scripts/install-deps.sh" | sed -e '1d' -e '$d' |
  sed 's/#.*//' | tr -s ' \n' '\n' | grep -v '^$' || true)
[[ -n "$listed" ]] || { echo "FAIL: no runtime=( ... ) list in scripts/install-deps.sh"; exit 1; }

# The closure of the listed packages under Depends and Pre-Depends (installed packages only).
declare -A have=()
queue=($listed)
while ((${#queue[@]})); do
  pkg=${queue[0]}
  queue=("${queue[@]:1}")
  pkg=${pkg%%:*}
  [[ -n "${have[$pkg]:-}" ]] && continue
  have[$pkg]=1
  deps=$(dpkg-query -W -f='${Depends}, ${Pre-Depends}' "$pkg" 2>/dev/null || true)
  for dep in $(echo "$deps" | tr ',' '\n' | sed -e 's/|.*//' -e 's/(.*)//' -e 's/ //g'); do
    [[ -n "$dep" ]] && queue+=("$dep")
  done
done

# Each library's owning package, from one dpkg query ("pkg:arch: /path" per line; a path is
# asked for both as ldd names it and resolved, since /lib is a symlink to /usr/lib).
mapfile -t libs < <(ldd "$binary" | awk '$3 ~ /^\// {print $3}')
declare -A owner_of=()
for lib in "${libs[@]}"; do owner_of[$lib]="" owner_of[$(readlink -f "$lib")]=""; done
while IFS= read -r line; do
  owner_of[${line#*: }]=${line%%:*}
done < <(dpkg -S "${!owner_of[@]}" 2>/dev/null || true)

status=0
for lib in "${libs[@]}"; do
  owner=${owner_of[$lib]:-${owner_of[$(readlink -f "$lib")]:-}}
  if [[ -z "$owner" ]]; then
    echo "FAIL: $lib belongs to no Debian package"
    status=1
    continue
  fi
  priority=$(dpkg-query -W -f='${Priority}' "$owner" 2>/dev/null || true)
  if [[ -z "${have[$owner]:-}" && "$priority" != required ]]; then
    echo "FAIL: $lib comes from $owner, which install-deps.sh --runtime does not install"
    status=1
  fi
done
[[ $status -eq 0 ]] && echo "every library $binary loads is installed by install-deps.sh --runtime"
exit "$status"

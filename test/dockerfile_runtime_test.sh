#!/usr/bin/env bash
# The Dockerfile's runtime stage installs every shared library the tollgate binary loads:
# each library `ldd` reports belongs to a Debian package that the stage's apt-get line
# names, that one of those depends on (recursively), or that every Debian system has
# (Priority: required, as in bookworm-slim). Usage: dockerfile_runtime_test.sh BINARY DOCKERFILE
set -euo pipefail
binary=$1 dockerfile=$2

# The packages the runtime stage installs: the apt-get install line after the last FROM.
listed=$(sed -n '/^FROM debian:bookworm-slim/,$p' "$dockerfile" | tr -d '\\' | tr '\n' ' ' |
  grep -o 'apt-get install [^&]*' | tr ' ' '\n' | grep -v -e '^-' -e '^apt-get$' -e '^install$' -e '^$' || true)
[[ -n "$listed" ]] || { echo "no apt-get install line in the runtime stage of $dockerfile"; exit 1; }

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
    echo "FAIL: $lib comes from $owner, which the runtime stage of $dockerfile does not install"
    status=1
  fi
done
[[ $status -eq 0 ]] && echo "every library $binary loads is installed by the runtime stage"
exit "$status"

#!/usr/bin/env bash
# The repository's documents stand alone:
#  - every relative link in its Markdown files names a file of the repository, and a
#    #fragment names a heading of that file (GitHub's anchors);
#  - every docs/<name>.md (optionally #anchor) cited in code, scripts and documents exists;
#  - nothing points outside the repository (../shared, /work/shared).
# Usage: test/docs_links.sh [REPOSITORY_ROOT]. Prints every problem; exit status 1 if any.
set -u
cd "${1:-$(dirname "$0")/..}" || exit 2

problems=0
problem() {
  echo "$1"
  problems=$((problems + 1))
}

# GitHub's anchors for the headings of a Markdown file, one per line: lower case, characters
# other than letters, digits, '_', '-' and ' ' dropped, spaces turned into '-', and "-N"
# added to the Nth repeat of a name. Headings inside fenced code do not count.
anchors() {
  awk '
    /^```/ { fenced = !fenced; next }
    fenced || !/^#+ / { next }
    {
      h = tolower($0)
      sub(/^#+ +/, "", h)
      gsub(/[^a-z0-9_ -]/, "", h)
      gsub(/ /, "-", h)
      n = seen[h]++
      print (n ? h "-" n : h)
    }' "$1"
}

has_anchor() {  # FILE ANCHOR
  anchors "$1" | grep -qxF -- "$2"
}

# Links in one Markdown file, outside fenced code and inline code spans: "TARGET" per line.
links() {
  awk '
    /^```/ { fenced = !fenced; next }
    fenced { next }
    {
      line = $0
      gsub(/`[^`]*`/, "", line)
      while (match(line, /\]\([^) ]+/)) {
        print substr(line, RSTART + 2, RLENGTH - 2)
        line = substr(line, RSTART + RLENGTH)
      }
    }' "$1"
}

markdown=$(find . -name '*.md' -not -path './.git/*' -not -path './build*' | sed 's|^\./||' | sort)
for md in $markdown; do
  dir=$(dirname "$md")
  while IFS= read -r target; do
    case "$target" in
      http://* | https://* | mailto:*) continue ;;
    esac
    file=${target%%#*}
    anchor=
    [[ "$target" == *"#"* ]] && anchor=${target#*#}
    if [[ -z "$file" ]]; then
      path=$md
    else
      path=$(realpath -m --relative-to=. "$dir/$file")
    fi
    if [[ "$path" == ../* || ! -e "$path" ]]; then
      problem "$md: link to $target: $path is not a file of the repository"
    elif [[ -n "$anchor" && "$path" == *.md ]] && ! has_anchor "$path" "$anchor"; then
      problem "$md: link to $target: $path has no heading with the anchor #$anchor"
    fi
  done < <(links "$md")
done

# docs/<name>.md and docs/<name>.md#anchor cited anywhere (code comments, scripts, docs).
while IFS= read -r hit; do
  where=${hit%%:docs/*}
  cited=docs/${hit#*:docs/}
  file=${cited%%#*}
  anchor=
  [[ "$cited" == *"#"* ]] && anchor=${cited#*#}
  if [[ ! -e "$file" ]]; then
    problem "$where: cites $cited, but $file does not exist"
  elif [[ -n "$anchor" ]] && ! has_anchor "$file" "$anchor"; then
    problem "$where: cites $cited, but $file has no heading with that anchor"
  fi
done < <(grep -rnoE --exclude-dir=.git --exclude-dir='build*' \
  'docs/[a-z0-9_-]+\.md(#[a-z0-9_-]+)?' \
  README.md docs src include test bench scripts examples manifests crds CMakeLists.txt Dockerfile \
  2>/dev/null)

# Nothing outside the repository.
while IFS= read -r hit; do
  problem "$hit: points outside the repository"
done < <(grep -rnE --exclude-dir=.git --exclude-dir='build*' --exclude=docs_links.sh \
  '(\.\./|/work/)shared' . 2>/dev/null)

if ((problems > 0)); then
  echo "$problems problem(s)"
  exit 1
fi
echo "all links resolve"

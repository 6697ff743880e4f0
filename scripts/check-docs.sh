#!/usr/bin/env bash
# Checks that code and documentation say what is true now, not how it came
# to be: history and figures belong in commit messages and in the dated
# reports of bench/reports/, which this check skips.
#
# Fails (exit 1), printing file:line: text for each hit, on
# - diary words in code and documentation (*.rs *.c *.h *.cpp *.ld *.sh
#   *.toml, README.md, */README.md, docs/): "session <n>", "issue <n>",
#   "issue #<n>", "closing note", in any case;
# - a README.md longer than 200 lines;
# - a link or quoted path in README.md or docs/ that leaves the repository
#   (../shared/...) or names a relative file that does not exist.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd -P)"
status=0

fail() {
    echo "$1"
    status=1
}

# Files to scan for diary words: everything but .git, build output, the
# fuzz corpus and the dated reports.
mapfile -d '' files < <(
    find . \( -path ./.git -o -path ./target -o -path '*/target' -o -path ./fuzz/corpus -o -path ./bench/reports \) -prune \
        -o -type f \( -name '*.rs' -o -name '*.c' -o -name '*.h' -o -name '*.cpp' -o -name '*.ld' -o -name '*.sh' \
        -o -name '*.toml' -o -name README.md -o -path './docs/*' \) -print0 | sort -z
)

diary='\bsession[[:space:]]+[0-9]+|\bissue[[:space:]]+#?[0-9]+|closing[[:space:]]+note'
# This file names the words it looks for; its own lines are not hits.
self='scripts/check-docs.sh'
while IFS= read -r hit; do
    fail "$hit"
done < <(
    for f in "${files[@]}"; do
        [ "${f#./}" = "$self" ] && continue
        grep -HniE "$diary" "$f" | sed 's|^\./||' || true
    done
)

lines=$(wc -l < README.md)
if [ "$lines" -gt 200 ]; then
    fail "README.md:$lines: README.md is $lines lines long (at most 200)"
fi

# Links ](path) and quoted paths `path` in README.md and docs/: a path
# leaving the repository fails, and so does a relative link to a missing
# file. Quoted text counts as a path if it starts with ./ or ../ or names
# an existing top-level directory of the repository.
mapfile -d '' docs < <(find README.md docs -type f -name '*.md' -print0 2>/dev/null | sort -z)
for f in "${docs[@]}"; do
    dir="$(dirname "$f")"
    n=0
    while IFS= read -r line || [ -n "$line" ]; do
        n=$((n + 1))
        # Markdown link targets.
        while IFS= read -r target; do
            [ -z "$target" ] && continue
            case "$target" in
            http://* | https://* | mailto:* | '#'*) continue ;;
            esac
            path="${target%%#*}"
            resolved="$(realpath -m "$dir/$path")"
            case "$resolved/" in
            "$root"/*) [ -e "$resolved" ] || fail "$f:$n: link to a missing file: $target" ;;
            *) fail "$f:$n: link outside the repository: $target" ;;
            esac
        done < <(grep -oE '\]\([^) ]+\)' <<<"$line" | sed -E 's/^\]\((.*)\)$/\1/')
        # Quoted paths that leave the repository, and absolute paths to it.
        while IFS= read -r quoted; do
            case "$quoted" in
            ../*)
                resolved="$(realpath -m "$dir/$quoted")"
                case "$resolved/" in
                "$root"/*) ;;
                *) fail "$f:$n: path outside the repository: $quoted" ;;
                esac
                ;;
            /work/* | /home/* | /root/*) fail "$f:$n: absolute path outside the repository: $quoted" ;;
            esac
        done < <(grep -oE '`[^`]+`' <<<"$line" | tr -d '`' | awk '{print $1}')
    done <"$f"
done

exit "$status"

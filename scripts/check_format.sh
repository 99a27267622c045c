#!/usr/bin/env bash
# Checks that every tracked C++ and CUDA source (git ls-files: *.cpp *.h *.cu
# *.cuh) is formatted as the repository's .clang-format says, with
# `clang-format --dry-run --Werror`. Exit 0 when all are; exit 1 listing each
# file that deviates with its number of deviations; exit 2 when git or
# clang-format is missing. `--fix` rewrites those files in place instead
# (`make format`). `make format-check` and .ci/run call it without arguments.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fix=0
case "${1:-}" in
  "") ;;
  --fix) fix=1 ;;
  *) echo "usage: scripts/check_format.sh [--fix]" >&2; exit 2 ;;
esac

clang_format=${CLANG_FORMAT:-clang-format}
if ! command -v "$clang_format" >/dev/null; then
  echo "check_format: $clang_format not found (scripts/setup.sh installs it)" >&2
  exit 2
fi
[ -f .clang-format ] || { echo "check_format: no .clang-format in $(pwd)" >&2; exit 2; }
command -v git >/dev/null || { echo "check_format: git not found" >&2; exit 2; }

files=()
while IFS= read -r -d '' f; do
  [ -f "$f" ] && files+=("$f")  # tracked but deleted in the work tree: nothing to check
done < <(git ls-files -z -- '*.cpp' '*.h' '*.cu' '*.cuh')
if [ ${#files[@]} -eq 0 ]; then
  echo "check_format: no tracked C++ or CUDA files" >&2
  exit 2
fi

if [ "$fix" -eq 1 ]; then
  "$clang_format" --style=file -i "${files[@]}"
  echo "check_format: formatted ${#files[@]} files with $("$clang_format" --version)" >&2
  exit 0
fi

# One warning per deviation: "FILE:LINE:COLUMN: error: code should be clang-formatted".
report=$("$clang_format" --style=file --dry-run --Werror "${files[@]}" 2>&1 >/dev/null) && rc=0 || rc=$?
counts=$(grep -E '^[^ ]+:[0-9]+:[0-9]+: (error|warning): code should be clang-formatted' \
  <<<"$report" | sed -E 's/:[0-9]+:[0-9]+: .*$//' | sort | uniq -c | sort -rn || true)
if [ -n "$counts" ]; then
  deviating=$(wc -l <<<"$counts")
  total=$(awk '{n += $1} END {print n}' <<<"$counts")
  {
    echo "check_format: $deviating of ${#files[@]} files deviate from .clang-format" \
      "($total deviations; make format fixes them):"
    sed -E 's/^ *([0-9]+) (.*)$/  \2 (\1)/' <<<"$counts"
  } >&2
  exit 1
fi
if [ "$rc" -ne 0 ]; then  # clang-format failed for another reason: show it
  echo "$report" >&2
  echo "check_format: $clang_format failed (exit $rc)" >&2
  exit 2
fi
echo "check_format: ${#files[@]} files match .clang-format" >&2

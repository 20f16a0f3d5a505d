#!/usr/bin/env bash
# Mutation check of GPU tests on the GPU machine: applies each MUTATIONS entry (a sed expression
# and the file it edits) to the build-gpu/ tree's sources, rebuilds gpu_tests, runs FILTER and
# expects at least one failure; restores the file after each. Logs to $OUT/mutate-logs.tar.gz.
# A mutation the tests do not catch is reported as "SURVIVED" (exit code 1).
#
# Usage: [OUT=DIR] FILTER=GTEST-FILTER MUTATIONS="FILE|SED-EXPR;FILE|SED-EXPR" scripts/gpu_mutate.sh
set -uo pipefail
# shellcheck source=scripts/gpu_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/gpu_common.sh"
: "${FILTER:?FILTER=GTEST-FILTER is required}" "${MUTATIONS:?MUTATIONS=FILE|SED-EXPR;... is required}"
# On any exit (the device tool's per-call limit included) the mutated file is put back first.
restore() { [[ -n "${mutated:-}" ]] && cp "$logs/original-$i" "$mutated"; mutated=""; }
trap 'restore; tar -czf "$OUT/mutate-logs.tar.gz" -C "$OUT" logs' EXIT
[[ -d build-gpu ]] || { echo "build-gpu/ missing: run scripts/gpu_runtime.sh first"; exit 3; }
survived=0
i=0
IFS=';' read -ra mutations <<< "$MUTATIONS"
for m in "${mutations[@]}"; do
  i=$((i + 1))
  file="${m%%|*}"; expr="${m#*|}"
  cp "$file" "$logs/original-$i"
  mutated="$file"
  sed -i "$expr" "$file"
  if cmp -s "$file" "$logs/original-$i"; then echo "mutation $i: '$expr' changed nothing in $file"; survived=1; mutated=""; continue; fi
  diff "$logs/original-$i" "$file" > "$logs/mutation-$i.diff"
  if cmake --build build-gpu -j 16 --target gpu_tests > "$logs/build-$i.log" 2>&1; then
    timeout 300 build-gpu/tests/gpu_tests --gtest_brief=1 --gtest_filter="$FILTER" > "$logs/tests-$i.log" 2>&1
    rc=$?  # a hang (124) counts as caught: the tests did not pass
    if (( rc == 0 )); then echo "mutation $i SURVIVED: $file: $expr"; survived=1
    else echo "mutation $i caught: $file: $expr"; grep -E "^\[  FAILED  \]" "$logs/tests-$i.log" | sort -u | head -5; fi
  else
    echo "mutation $i: build failed ($file: $expr)"; tail -5 "$logs/build-$i.log"
  fi
  restore
done
cmake --build build-gpu -j 16 --target gpu_tests > "$logs/build-restored.log" 2>&1 && echo "restored build ok"
exit $survived

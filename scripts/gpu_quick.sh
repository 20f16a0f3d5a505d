#!/usr/bin/env bash
# A quick check on the GPU machine when device time is short: configure build-gpu/ (Release,
# sm_90a), build only gpu_tests (then the CLI), run the GPU tests matching FILTER, then (if time
# is left before DEADLINE seconds) `slidesparse run` with RUN_ARGS. Logs under $OUT.
#
# Usage: [OUT=DIR] FILTER=GTEST-FILTER [RUN_ARGS="..."] [DEADLINE=S] scripts/gpu_quick.sh
set -uo pipefail
# shellcheck source=scripts/gpu_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/gpu_common.sh"
: "${FILTER:?FILTER=GTEST-FILTER is required}"
# A step needs time left: timeout 0 would disable the limit, a negative one fails to run.
need() { (( $(left) > ${1:-5} )) || { echo "DEADLINE reached before: $2"; exit 4; }; }
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DSLIDESPARSE_CUSPARSELT_ROOT="$torch_site/nvidia/cusparselt" \
  -DSLIDESPARSE_CUDNN_ROOT="$torch_site/nvidia/cudnn" -DCMAKE_CUDA_ARCHITECTURES=90a-real > "$OUT/configure.log" 2>&1 \
  || { tail -20 "$OUT/configure.log"; exit 3; }
need 30 "build"
timeout "$(left)" cmake --build build-gpu -j 16 --target gpu_tests > "$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log"; exit 1; }
echo "gpu_tests built at $((SECONDS - started)) s"
need 5 "gpu_tests"
timeout "$(left)" build-gpu/tests/gpu_tests --gtest_filter="$FILTER" > "$OUT/gpu_tests.log" 2>&1
echo "gpu_tests rc=$? at $((SECONDS - started)) s"; grep -E "OK \]|FAILED|info \]|Failure|PASSED" "$OUT/gpu_tests.log" | head -30
if [[ -n "${RUN_ARGS:-}" ]] && (( $(left) > 60 )); then
  timeout "$(left)" cmake --build build-gpu -j 16 --target slidesparse >> "$OUT/build.log" 2>&1 &&
    # shellcheck disable=SC2086
    timeout "$(left)" build-gpu/bin/slidesparse run $RUN_ARGS --tuning-cache none --json "$OUT/run.json" > "$OUT/run.log" 2>&1
  echo "run rc=$?"; grep -v "layer [0-9]" "$OUT/run.log" | tail -12
fi

#!/usr/bin/env bash
# One device call for the hand-written sm90a 2:4 GEMM (issue 4): while build-gpu/ (gpu_tests and
# the CLI) builds in the background, scripts/gpu_sparse_mainloop.sh compiles and runs the layout
# discovery and the prototype (exactness of every schedule, gate_up timing, ncu with PROFILE=1);
# then the GPU tests matching FILTER (the GPU is idle by then, so the timings above are not
# disturbed), then the baseline the prototype is judged against on the same card minutes later:
# `slidesparse bench` of the gate_up shape (GEMM only and whole layer; 2:4 and 6:8 on every backend,
# the sm90 kernel included, and dense; BENCH_ARGS overrides); then, time left, compute-sanitizer memcheck of the kernel's own
# tests. Logs land in $OUT (at most 8 files come back: the build and test logs go into one tarball).
#
# Usage: [OUT=DIR] [DEADLINE=S] [PROFILE=1] [FILTER=GTEST-FILTER] [BENCH_ARGS="..."] scripts/gpu_sm90_check.sh
set -uo pipefail
# shellcheck source=scripts/gpu_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/gpu_common.sh"
FILTER="${FILTER:-Sm90*:LinearGpu.Sm90*:LinearGpu.Dispatch*:LinearGpu.EveryDispatch*:LinearGpu.WeightSharing*:GpuModelTest.DenseFallback*:LinearBuckets.*}"
BENCH_ARGS="${BENCH_ARGS:---model shape:37888x3584 --m 4096 --dtype fp8,int8 --pattern 2:4,6:8 --mode gemm,layer --backend library,cutlass,sm90,dispatch --repeats 20}"
trap 'tar -C "$logs" -czf "$OUT/logs.tar.gz" . 2>/dev/null' EXIT
(
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DSLIDESPARSE_CUSPARSELT_ROOT="$torch_site/nvidia/cusparselt" \
    -DSLIDESPARSE_CUDNN_ROOT="$torch_site/nvidia/cudnn" -DCMAKE_CUDA_ARCHITECTURES=90a-real > "$logs/configure.log" 2>&1 &&
    nice -n 10 cmake --build build-gpu -j 14 --target gpu_tests slidesparse > "$logs/build.log" 2>&1
  echo "build rc=$? at $((SECONDS - started)) s" > "$logs/build.rc"
) &
build=$!
scripts/gpu_sparse_mainloop.sh
echo "mainloop done at $((SECONDS - started)) s"
wait "$build"
cat "$logs/build.rc"
grep -q "rc=0" "$logs/build.rc" || { tail -30 "$logs/build.log"; exit 1; }
timeout "$(left)" build-gpu/tests/gpu_tests --gtest_filter="$FILTER" > "$OUT/gpu_tests.log" 2>&1
echo "gpu_tests rc=$? at $((SECONDS - started)) s"
grep -E "OK \]|FAILED|info \]|Failure|PASSED|SKIPPED" "$OUT/gpu_tests.log" | head -40
if (( $(left) > 60 )); then
  # shellcheck disable=SC2086
  timeout "$(left)" build-gpu/bin/slidesparse bench $BENCH_ARGS --tuning-cache "$logs/tuning.json" --out "$OUT/bench" \
    > "$logs/bench.log" 2>&1
  echo "bench rc=$? at $((SECONDS - started)) s"
  cat "$OUT/bench.csv" 2>/dev/null | head -20
fi
if (( $(left) > 40 )); then
  # compute-sanitizer on the kernel's own tests (small shapes: memcheck slows kernels 10-100x).
  timeout "$(left)" compute-sanitizer --tool memcheck --error-exitcode 9 build-gpu/tests/gpu_tests \
    --gtest_filter='Sm90SparseGemmGpu.*' > "$logs/memcheck.log" 2>&1
  echo "memcheck rc=$? at $((SECONDS - started)) s"; grep -E "ERROR SUMMARY|PASSED|FAILED" "$logs/memcheck.log" | head -5
fi

#!/usr/bin/env bash
# The CUTLASS backend's check on the GPU machine, in one call: build (Release, sm_90a), the
# CUTLASS kernel and layer tests, a short Qwen2.5-7B FP8 benchmark (M = 4096, 16384), Nsight
# Compute on the gate_up shape with the tuned kernels, and compute-sanitizer memcheck on the
# compression, graph-capture and dispatch tests. Logs in $OUT (benchmark files packed in b.tgz).
#
# Usage: [OUT=DIR] scripts/gpu_cutlass_check.sh
set -uo pipefail
OUT="$(realpath -m "${OUT:-./out}")"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH
cusp=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cusparselt
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DSLIDESPARSE_CUSPARSELT_ROOT=$cusp -DCMAKE_CUDA_ARCHITECTURES=90a-real > $OUT/build.log 2>&1
cmake --build build-gpu -j16 >> $OUT/build.log 2>&1 || { tail -30 $OUT/build.log; exit 1; }
build-gpu/tests/gpu_tests --gtest_filter='CutlassGemmGpu.*:LinearGpu.*' > $OUT/gtest.log 2>&1; grep -E "OK|FAILED|PASSED|dispatch N" $OUT/gtest.log | tail -25
OUT=$OUT/b timeout 300 scripts/gpu_bench.sh --model qwen2.5-7b --dtype fp8 --pattern 2:4,6:8 --m 4096,16384 --backend library,cutlass --mode layer,gemm --repeats 10 > $OUT/bench.log 2>&1
grep -A6 "sum of the layers" $OUT/b/bench.md
TUNING_CACHE=$OUT/b/tuning.json timeout 150 scripts/gpu_profile.sh 37888 3584 4096 fp8 2:4 > /dev/null
compute-sanitizer --tool memcheck --error-exitcode 1 build-gpu/tests/gpu_tests --gtest_filter='CutlassGemmGpu.Compression*:LinearGpu.ForwardIsCapturable*:LinearGpu.Dispatching*' > $OUT/memcheck.log 2>&1; echo memcheck rc=$?; tail -3 $OUT/memcheck.log
cd $OUT && tar czf b.tgz b && rm -rf b

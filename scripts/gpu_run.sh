#!/usr/bin/env bash
# The one script run on the GPU machine: build everything (Release, sm_90a) into build-gpu/, then
# run the device report, the test suites, compute-sanitizer on the GPU tests, the ceilings
# benchmark, the quant+lift benchmark and the wgmma probe (bench/wgmma_probe.cu). Each step's
# output goes to $OUT/logs/<step>.log (and the terminal), packed into $OUT/gpu-run-logs.tar.gz at
# the end (the device tool returns at most 8 files); a failed step does not stop the later ones,
# but the exit code is 1 if any failed (3 if build dependencies are missing).
#
# Usage: [OUT=DIR] [SKIP_CEILINGS=1] [SKIP_MEMCHECK=1] [MEMCHECK_FILTER=GTEST-FILTER] [SKIP_TESTS=1]
#        [PROBE_NCU="ROW ROW ..."] [SLIDESPARSE_CUSPARSELT_ROOT=DIR] scripts/gpu_run.sh
#        (OUT defaults to ./out; MEMCHECK_FILTER limits the compute-sanitizer pass, which is slow;
#        PROBE_NCU profiles those rows of the wgmma probe with Nsight Compute)
set -euo pipefail
OUT="$(realpath -m "${OUT:-./out}")"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
mkdir -p "$OUT/logs"
logs="$OUT/logs"
trap 'tar -czf "$OUT/gpu-run-logs.tar.gz" -C "$OUT" logs' EXIT
torch_site=/opt/torch/.venv/lib/python3.12/site-packages
cusparselt="${SLIDESPARSE_CUSPARSELT_ROOT:-$torch_site/nvidia/cusparselt}"
command -v nvcc >/dev/null || export PATH="/usr/local/cuda/bin:$PATH"

failed=()
step() {  # step NAME COMMAND...: run it, tee to $logs/NAME.log; a failure is remembered, returns 1
  local name="$1"; shift
  echo "=== $name: $*"
  if ! "$@" 2>&1 | tee "$logs/$name.log"; then
    failed+=("$name")
    echo "=== $name: FAILED"
    return 1
  fi
}
finish() {
  if [[ ${#failed[@]} -gt 0 ]]; then echo "gpu_run: FAILED steps: ${failed[*]}"; exit 1; fi
  echo "gpu_run: all steps passed"; exit 0
}

nvidia-smi >"$logs/nvidia-smi.txt" 2>&1 || failed+=(nvidia-smi)
cat "$logs/nvidia-smi.txt"

# Header-only / dev packages the build needs (Debian: libcli11-dev nlohmann-json3-dev libfmt-dev
# libgtest-dev). Searched in /usr, /usr/local and every CMAKE_PREFIX_PATH entry.
missing=()
for header in CLI/CLI.hpp nlohmann/json.hpp fmt/core.h gtest/gtest.h; do
  found=0
  for prefix in /usr /usr/local ${CMAKE_PREFIX_PATH:+${CMAKE_PREFIX_PATH//:/ }}; do
    [[ -f "$prefix/include/$header" ]] && found=1 && break
  done
  [[ $found -eq 1 ]] || missing+=("$header")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "gpu_run: MISSING build dependencies: ${missing[*]}" | tee "$logs/missing-deps.log"
  exit 3
fi
if ! command -v nvcc >/dev/null; then
  echo "gpu_run: nvcc not found (PATH, /usr/local/cuda/bin)"; exit 3
fi

if ! step configure cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release \
       -DSLIDESPARSE_CUSPARSELT_ROOT="$cusparselt" -DSLIDESPARSE_CUDNN_ROOT="$torch_site/nvidia/cudnn" \
       -DCMAKE_CUDA_ARCHITECTURES=90a-real ||
   ! step build cmake --build build-gpu -j 16; then
  finish  # without a build nothing else can run
fi

step info build-gpu/bin/slidesparse info || true
[[ -z "${SKIP_TESTS:-}" ]] && { step ctest ctest --test-dir build-gpu --output-on-failure || true; }
if [[ -x build-gpu/tests/gpu_tests && -z "${SKIP_MEMCHECK:-}" ]]; then
  step memcheck compute-sanitizer --tool memcheck --error-exitcode 1 build-gpu/tests/gpu_tests \
    ${MEMCHECK_FILTER:+--gtest_filter="$MEMCHECK_FILTER"} || true
fi
if [[ -z "${SKIP_CEILINGS:-}" ]]; then  # SKIP_CEILINGS=1: the ceilings are measured once
  step ceilings build-gpu/bin/bench_ceilings --json "$logs/ceilings.json" || true
fi
step quant_lift build-gpu/bin/bench_quant_lift --json "$logs/quant_lift.json" || true
step wgmma_probe build-gpu/bin/bench_wgmma_probe || true
for row in ${PROBE_NCU:-}; do
  step "ncu-probe-$row" ncu --clock-control none --section SpeedOfLight --section ComputeWorkloadAnalysis \
    --section MemoryWorkloadAnalysis_Tables build-gpu/bin/bench_wgmma_probe --only "$row" --reps 0 || true
done
finish

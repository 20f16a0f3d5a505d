#!/usr/bin/env bash
# Profiles the CUTLASS GEMM kernels (dense and 2:4 sparse, fused epilogue) of one layer shape with
# Nsight Compute on the GPU machine: speed of light, compute (tensor pipe) and memory workload
# (shared-memory and DRAM throughput) sections, written to $OUT/ncu-<N>x<K>-m<M>.txt. The
# evidence behind "what limits the best configuration" in docs/PERFORMANCE.md.
#
# Needs build-gpu/ (scripts/gpu_run.sh or gpu_bench.sh builds it). TUNING_CACHE=FILE makes the
# layers take their tuned configurations instead of searching (the search's candidate kernels
# would be profiled otherwise).
#
# Usage: [OUT=DIR] [TUNING_CACHE=FILE] scripts/gpu_profile.sh N K M [fp8|int8] [PATTERN]
#   e.g. TUNING_CACHE=tuning.json scripts/gpu_profile.sh 37888 3584 4096 fp8 2:4
set -euo pipefail
OUT="$(realpath -m "${OUT:-./out}")"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
mkdir -p "$OUT"
n="$1" k="$2" m="$3" dtype="${4:-fp8}" pattern="${5:-2:4}"
command -v ncu >/dev/null || export PATH="/usr/local/cuda/bin:$PATH"
cache="$(mktemp -d)/tuning.json"
[[ -n "${TUNING_CACHE:-}" && -f "$TUNING_CACHE" ]] && cp "$TUNING_CACHE" "$cache"
# GEMM step only, one timed call per variant: each CUTLASS layer launches its GEMM twice (the
# priming forward and the timed GEMM step), dense before sparse; the four are captured (matched
# on the mainloop type, so the 2:4 compressor and the library kernels are not). Without a tuning
# cache entry the captures are the search's first candidates instead.
ncu --kernel-name-base demangled --kernel-name 'regex:MainloopSm90TmaGmmaWarpSpecialized(Sparse)?<' \
  --launch-count 4 --print-details all \
  --section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
  --section MemoryWorkloadAnalysis_Tables --section Occupancy --section LaunchStats \
  build-gpu/bin/slidesparse bench --model "shape:${n}x${k}" --m "$m" --dtype "$dtype" --pattern "$pattern" \
  --mode gemm --backend library,cutlass --warmup 0 --repeats 1 --tuning-cache "$cache" --out "$(dirname "$cache")/b" \
  >"$OUT/ncu-${n}x${k}-m${m}.txt" 2>&1
grep -E "device_kernel|Duration|Compute \(SM\) Throughput|Memory Throughput|Shared Memory|DRAM Throughput|Registers Per|Achieved Occupancy|Block Size" \
  "$OUT/ncu-${n}x${k}-m${m}.txt" | cut -c1-160 | head -80

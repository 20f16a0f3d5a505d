#!/usr/bin/env bash
# The wgmma probe (bench/wgmma_probe.cu) on the GPU machine: every variant, then the SASS of the
# whole binary (gzipped) and Nsight Compute sections for the rows in NCU_ROWS. Everything lands in
# $OUT (probe.log, sass.txt.gz, ncu-row<R>.txt).
#
# Usage: [OUT=DIR] [PROBE=BINARY] [NCU_ROWS="4 11 12"] scripts/gpu_probe.sh
#   PROBE: a bench_wgmma_probe built elsewhere (e.g. on the CPU machine and carried); default:
#   compile bench/wgmma_probe.cu here with nvcc (sm_90a, about a minute).
set -uo pipefail
OUT="$(realpath -m "${OUT:-./out}")"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
mkdir -p "$OUT"
command -v nvcc >/dev/null || export PATH="/usr/local/cuda/bin:$PATH"
probe="${PROBE:-}"
if [[ -z "$probe" ]]; then
  probe="$(mktemp -d)/bench_wgmma_probe"
  nvcc -std=c++20 -O3 -gencode=arch=compute_90a,code=sm_90a -diag-suppress 177 -o "$probe" bench/wgmma_probe.cu || exit 1
fi
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv | tee "$OUT/probe.log"
"$probe" 2>&1 | tee -a "$OUT/probe.log"
cuobjdump -sass "$probe" | gzip > "$OUT/sass.txt.gz"
for row in ${NCU_ROWS:-}; do
  ncu --clock-control none --section SpeedOfLight --section ComputeWorkloadAnalysis \
    --section MemoryWorkloadAnalysis_Tables --section WarpStateStats \
    "$probe" --only "$row" --reps 0 > "$OUT/ncu-row$row.txt" 2>&1
  echo "ncu row $row: rc=$?"
  grep -E "Duration|SM Frequency|Pipe Tensor|Pipe Shared|Lsu Wavefronts|Bank Reads|Bank Writes|Stall|L2 Cache Throughput" \
    "$OUT/ncu-row$row.txt" | cut -c1-130 | head -20
done

#!/usr/bin/env bash
# The hand-written sparse mainloop on the GPU machine (docs/PERFORMANCE.md, "What the next kernel
# step would change"): compiles bench/wgmma_sp_layout.cu and bench/sparse_gemm_proto.cu with nvcc
# for sm_90a (seconds; no CMake build), runs the layout discovery, then — if the layouts hold —
# the prototype: every schedule's exactness on awkward sizes and its Qwen2.5-7B gate_up timing.
# With PROFILE=1, Nsight Compute then profiles one BF16 launch of schedule 0 (CUTLASS's drain per
# stage) and of the fastest schedule (tensor-pipe and shared-memory throughput: what limits it).
# Everything lands in $OUT (sparse-mainloop.log, ncu-schedule*.txt).
#
# Usage: [OUT=DIR] [DEADLINE=S] [PROFILE=1] scripts/gpu_sparse_mainloop.sh
set -uo pipefail
# shellcheck source=scripts/gpu_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/gpu_common.sh"
log="$OUT/sparse-mainloop.log"
bin="$(mktemp -d)"
flags=(-std=c++20 -O2 "-gencode=arch=compute_90a,code=sm_90a" -diag-suppress 177)
{
  date -u +"%Y-%m-%d %H:%M UTC"
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv
  nvcc --version | tail -2
  nvcc "${flags[@]}" -o "$bin/layout" bench/wgmma_sp_layout.cu &
  nvcc "${flags[@]}" -o "$bin/proto" bench/sparse_gemm_proto.cu &
  wait
  [[ -x "$bin/layout" && -x "$bin/proto" ]] || { echo "compile failed"; exit 1; }
  timeout "$(left)" "$bin/layout"
  layout_rc=$?
  echo "layout rc=$layout_rc"
  if (( layout_rc != 0 )); then
    echo "prototype not run: the layouts it assumes do not hold (see above)"
    exit 1
  fi
  timeout "$(left)" "$bin/proto" | tee "$bin/proto.txt"
  echo "proto rc=${PIPESTATUS[0]}"
  if [[ "${PROFILE:-0}" == 1 ]]; then
    # "  schedule I (stages ..): T us [...]" lines of the timing; the fastest one's index.
    best=$(grep -E '^  schedule [0-9]+ \(' "$bin/proto.txt" | sort -t: -k2 -g | head -1 | awk '{print $2}')
    for s in 0 ${best:+$best}; do
      [[ -f "$OUT/ncu-schedule$s.txt" ]] && continue
      echo "--- ncu, schedule $s"
      timeout "$(left)" ncu -k regex:nv_bfloat16 --launch-count 1 \
        --section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
        --section WarpStateStats --section Occupancy "$bin/proto" --schedule "$s" > "$OUT/ncu-schedule$s.txt" 2>&1
      echo "ncu rc=$?"
      grep -E "Duration|Compute \(SM\) Throughput|Memory Throughput|Shared Memory|Tensor|Issue Slots Busy" \
        "$OUT/ncu-schedule$s.txt" | head -20
    done
  fi
} 2>&1 | tee "$log"

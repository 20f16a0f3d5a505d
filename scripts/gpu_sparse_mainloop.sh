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
  # The library's host tiling is plain C++ with fmt: g++ compiles it (nvcc's host pass cannot
  # take fmt 9's consteval format strings), nvcc links it.
  (g++ -std=c++20 -O2 -Iinclude -c src/cuda/sm90/sparse_tiles.cpp -o "$bin/tiles.o" &&
    nvcc "${flags[@]}" -o "$bin/proto" bench/sparse_gemm_proto.cu "$bin/tiles.o" -lfmt) &
  wait
  [[ -x "$bin/layout" && -x "$bin/proto" ]] || { echo "compile failed"; exit 1; }
  timeout "$(left)" "$bin/layout"
  layout_rc=$?
  echo "layout rc=$layout_rc"
  if (( layout_rc != 0 )); then
    echo "prototype not run: the layouts it assumes do not hold (see above)"
    exit 1
  fi
  # PROFILE_SCHEDULES="I ...": only the profiles of those schedules (no full run first).
  if [[ -z "${PROFILE_SCHEDULES:-}" ]]; then
    timeout "$(left)" "$bin/proto" | tee "$bin/proto.txt"
    echo "proto rc=${PIPESTATUS[0]}"
  fi
  if [[ "${PROFILE:-0}" == 1 ]]; then
    # "  FP8 E4M3 schedule I (stages ..): T us [...]" lines of the timing; the fastest one's index.
    best=$(grep -E '^  FP8 E4M3 schedule [0-9]+ \(' "$bin/proto.txt" 2>/dev/null | sort -t: -k2 -g | head -1 | awk '{print $4}')
    for s in ${PROFILE_SCHEDULES:-0 ${best:+$best}}; do
      [[ -f "$OUT/ncu-schedule$s.txt" ]] && continue
      echo "--- ncu, schedule $s"
      # Launch 8 of the BF16 kernel: after the six FP8 exactness cases, the gate_up timing's
      # warm-up. Real clocks (--clock-control none), to compare with the timing above.
      timeout "$(left)" ncu --kernel-name-base demangled -k regex:nv_bfloat16 --launch-skip 7 --launch-count 1 --clock-control none \
        --section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
        --section MemoryWorkloadAnalysis_Tables --section WarpStateStats --section SchedulerStats \
        --section LaunchStats --section Occupancy "$bin/proto" --schedule "$s" > "$OUT/ncu-schedule$s.txt" 2>&1
      echo "ncu rc=$?"
      grep -E "Grid Size|Duration|SM Frequency|Compute \(SM\) Throughput|Memory Throughput|L2 Hit|L1/TEX Hit|DRAM Throughput|Shared Memory|Tensor|Issue Slots Busy|Registers Per|Stall|Eligible Warps|No Eligible" \
        "$OUT/ncu-schedule$s.txt" | head -40
    done
  fi
} 2>&1 | tee "$log"

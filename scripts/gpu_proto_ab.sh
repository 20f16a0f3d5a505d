#!/usr/bin/env bash
# A/B timing of prototype builds of the hand-written sm90 kernel on the GPU machine: runs every
# .probe/proto_* binary (bench_sparse_gemm_proto built on the CPU machine from different commits,
# e.g. main and a branch: `g++ -std=c++20 -O2 -Iinclude -c src/cuda/sm90/sparse_tiles.cpp` and
# `nvcc -std=c++20 -O2 -gencode=arch=compute_90a,code=sm_90a bench/sparse_gemm_proto.cu tiles.o
# -lfmt`, as scripts/gpu_sparse_mainloop.sh does) with `--schedule S` for each S in SCHEDULES,
# ROUNDS times round-robin (clock drift hits every build alike), and prints each run's exactness
# verdict and timing lines. Carry .probe in the run call. Logs in $OUT/proto-ab.log.
#
# Usage: [OUT=DIR] [SCHEDULES="2 4"] [ROUNDS=2] [DEADLINE=S] bash scripts/gpu_proto_ab.sh
set -uo pipefail
# shellcheck source=scripts/gpu_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/gpu_common.sh"
{
  date -u +"%Y-%m-%d %H:%M UTC"
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader
  for round in $(seq "${ROUNDS:-2}"); do
    for s in ${SCHEDULES:-2 4}; do
      for bin in .probe/proto_*; do
        (( $(left) > 10 )) || { echo "DEADLINE reached"; exit 4; }
        echo "== round $round, schedule $s, $(basename "$bin")"
        timeout "$(left)" "$bin" --schedule "$s" | grep -E "MISMATCH|schedule [0-9]+ \(|proto:"
      done
    done
  done
} 2>&1 | tee "$OUT/proto-ab.log"

#!/usr/bin/env bash
# The hand-written sparse mainloop's first GPU call (docs/PERFORMANCE.md, "What the next kernel
# step would change"): compiles bench/wgmma_sp_layout.cu and bench/sparse_gemm_proto.cu (both
# in-flight variants) with nvcc for sm_90a, runs the layout discovery, then each prototype
# (exactness, then the gate_up timing) if the layouts hold, and counts in the SASS what ptxas made
# of warning C7513 (wgmma serialization: HGMMA instructions and WARPGROUP.DEPBAR waits per
# variant). Everything lands in $OUT (sparse-mainloop.log, sass-proto-inflight{0,1}.txt.gz).
#
# Usage: [OUT=DIR] [DEADLINE=S] scripts/gpu_sparse_mainloop.sh
set -uo pipefail
# shellcheck source=scripts/gpu_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/gpu_common.sh"
log="$OUT/sparse-mainloop.log"
bin="$(mktemp -d)"
flags=(-std=c++20 -O2 "-gencode=arch=compute_90a,code=sm_90a" -diag-suppress 177)
{
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv
  nvcc --version | tail -2
  nvcc "${flags[@]}" -o "$bin/layout" bench/wgmma_sp_layout.cu || exit 1
  for v in 1 0; do
    nvcc "${flags[@]}" -DSLIDESPARSE_PROTO_IN_FLIGHT=$v -o "$bin/proto$v" bench/sparse_gemm_proto.cu 2>&1 | grep -E "C75|error"
    [[ -x "$bin/proto$v" ]] || exit 1
    cuobjdump -sass "$bin/proto$v" > "$bin/sass$v.txt"
    echo "in-flight $v: SASS HGMMA $(grep -c HGMMA "$bin/sass$v.txt"), WARPGROUP.DEPBAR $(grep -c 'WARPGROUP.DEPBAR' "$bin/sass$v.txt"), WARPGROUP.ARRIVE $(grep -c 'WARPGROUP.ARRIVE' "$bin/sass$v.txt")"
    gzip -c "$bin/sass$v.txt" > "$OUT/sass-proto-inflight$v.txt.gz"
  done
  timeout "$(left)" "$bin/layout"
  layout_rc=$?
  echo "layout rc=$layout_rc"
  if (( layout_rc == 0 )); then
    for v in 1 0; do
      echo "--- prototype, in-flight $v"
      timeout "$(left)" "$bin/proto$v"
      echo "proto$v rc=$?"
    done
  else
    echo "prototypes not run: the layouts they assume do not hold (see above)"
  fi
} 2>&1 | tee "$log"

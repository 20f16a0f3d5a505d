#!/usr/bin/env bash
# Benchmark of `slidesparse convert` (prune + quantize + write) on a synthetic ~1.5 GB BF16
# checkpoint (preset bench-1gb: 10 Llama-3.2-1B-like layers + embeddings, 4 shards).
# Reports MB/s of input per run (median and spread of REPEATS runs after one warm-up run); the
# input stays in the page cache (warm), the output is written and fsynced each run.
#
# Usage: scripts/bench_convert.sh [WORK_DIR] [REPEATS]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cli="$root/build/bin/slidesparse"
work="${1:-/tmp/slidesparse-bench-convert}"
repeats="${2:-5}"
[[ -x "$cli" ]] || { echo "build first: scripts/setup.sh" >&2; exit 2; }
mkdir -p "$work"
[[ -f "$work/dense/config.json" ]] || "$cli" synth "$work/dense" --preset bench-1gb
input_bytes=$(du -cb "$work"/dense/*.safetensors | tail -n1 | cut -f1)
echo "input: $input_bytes bytes of BF16 safetensors in $work/dense; $(nproc) cores; $(uname -m)"

for quant in fp8 int8 none; do
  rates=()
  for run in $(seq 0 "$repeats"); do
    rm -rf "$work/out"
    start=$(date +%s.%N)
    "$cli" convert "$work/dense" "$work/out" --pattern 6:8 --quant "$quant" --no-progress >/dev/null
    end=$(date +%s.%N)
    [[ $run -eq 0 ]] && continue  # warm-up (page cache, allocator)
    rates+=("$(python3 -c "print(f'{$input_bytes / 1e6 / ($end - $start):.0f}')")")
  done
  sorted=$(printf '%s\n' "${rates[@]}" | sort -n | tr '\n' ' ')
  median=$(printf '%s\n' "${rates[@]}" | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}')
  echo "convert --pattern 6:8 --quant $quant: median $median MB/s (runs: $sorted)"
done
rm -rf "$work/out"

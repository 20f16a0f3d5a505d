#!/usr/bin/env bash
# Runs `slidesparse bench` on the GPU machine: builds the CLI (Release, sm_90a) into build-gpu/,
# runs the benchmark with the given arguments, writes $OUT/bench.{json,csv,md}, draws
# $OUT/bench.png where matplotlib is importable (the machine's PyTorch venv has it), and packs
# the logs and the tuning cache into $OUT/bench-logs.tar.gz (the device tool returns at most 8
# files). TUNING_CACHE=FILE starts from an earlier tuning cache.
#
# Usage: [OUT=DIR] [SLIDESPARSE_CUSPARSELT_ROOT=DIR] [LD_LIBRARY_PATH=...] scripts/gpu_bench.sh BENCH-ARGS...
#   e.g. scripts/gpu_bench.sh --model qwen2.5-7b --dtype fp8,int8
set -euo pipefail
OUT="$(realpath -m "${OUT:-./out}")"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
mkdir -p "$OUT"
logs="$(mktemp -d)"
trap 'tar -C "$logs" -czf "$OUT/bench-logs.tar.gz" . 2>/dev/null || true' EXIT
[[ -n "${TUNING_CACHE:-}" && -f "$TUNING_CACHE" ]] && cp "$TUNING_CACHE" "$logs/tuning.json"
torch_site=/opt/torch/.venv/lib/python3.12/site-packages
cusparselt="${SLIDESPARSE_CUSPARSELT_ROOT:-$torch_site/nvidia/cusparselt}"
command -v nvcc >/dev/null || export PATH="/usr/local/cuda/bin:$PATH"
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DSLIDESPARSE_CUSPARSELT_ROOT="$cusparselt" -DSLIDESPARSE_CUDNN_ROOT="$torch_site/nvidia/cudnn" \
  -DCMAKE_CUDA_ARCHITECTURES=90a-real >"$logs/configure.log" 2>&1 || { cat "$logs/configure.log"; exit 3; }
cmake --build build-gpu -j 16 --target slidesparse >"$logs/build.log" 2>&1 || { tail -50 "$logs/build.log"; exit 3; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.draw,power.limit,temperature.gpu --format=csv \
  | tee "$logs/nvidia-smi.csv"
build-gpu/bin/slidesparse info | tee "$logs/info.txt"
build-gpu/bin/slidesparse bench "$@" --tuning-cache "$logs/tuning.json" --out "$OUT/bench" 2>"$logs/bench-progress.log" \
  >"$logs/bench.log"
rm -f "$logs/tuning.json.lock"
cp "$logs/tuning.json" "$OUT/tuning.json" 2>/dev/null || true  # for scripts/gpu_profile.sh
grep -A16 "sum of the layers" "$OUT/bench.md" || head -40 "$OUT/bench.md"
for py in /opt/torch/.venv/bin/python3 python3; do
  if command -v "$py" >/dev/null && "$py" -c "import matplotlib" 2>/dev/null; then
    "$py" scripts/plot_bench.py "$OUT/bench.json" "$OUT/bench.png" && break
  fi
done

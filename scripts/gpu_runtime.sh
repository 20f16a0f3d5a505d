#!/usr/bin/env bash
# The GPU runtime on the GPU machine: build (Release, sm_90a) into build-gpu/, the GPU test
# suite, compute-sanitizer on the model tests, then `slidesparse run` on presets (dense vs
# SlideSparse). Logs go to $OUT/runtime-logs.tar.gz; JSON results to $OUT/run-*.json (tarred).
#
# Usage: [OUT=DIR] [RUNS="ARGS;ARGS;..."] [SKIP_TESTS=1] [SKIP_MEMCHECK=1] [DEADLINE=S] scripts/gpu_runtime.sh
#        RUNS: ';'-separated argument lists for `slidesparse run` (default: a small sanity run and
#        Qwen2.5-7B FP8 6:8 vs dense at B=8, P=512, G=64).
#        DEADLINE: seconds after the start by which every run must end (a run is cut off at the
#        deadline, later ones skipped), so that the logs are still packed when the device tool's
#        per-call limit would otherwise kill the script.
set -uo pipefail
# shellcheck source=scripts/gpu_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/gpu_common.sh"
pack() { tar -czf "$OUT/runtime-logs.tar.gz" -C "$OUT" logs; }
trap pack EXIT

nvidia-smi > "$logs/nvidia-smi.txt" 2>&1
{ cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DSLIDESPARSE_CUSPARSELT_ROOT="$torch_site/nvidia/cusparselt" -DSLIDESPARSE_CUDNN_ROOT="$torch_site/nvidia/cudnn" \
    -DCMAKE_CUDA_ARCHITECTURES=90a-real &&
  cmake --build build-gpu -j 16; } > "$logs/build.log" 2>&1 || { tail -50 "$logs/build.log"; exit 1; }
echo "build ok"; grep -i "cudnn" "$logs/build.log" | head -3; build-gpu/bin/slidesparse info
if [[ -z "${SKIP_TESTS:-}" ]]; then
  build-gpu/tests/gpu_tests --gtest_brief=1 > "$logs/gpu_tests.log" 2>&1
  echo "gpu_tests rc=$?"; grep -E "FAILED|PASSED|info \]" "$logs/gpu_tests.log" | head -40
  if [[ -z "${SKIP_MEMCHECK:-}" ]]; then
    compute-sanitizer --tool memcheck --error-exitcode 1 build-gpu/tests/gpu_tests --gtest_brief=1 \
      --gtest_filter='GpuModelTest.Attention*:GpuModelTest.Bf16*:GpuModelTest.Usage*:GpuModelTest.Greedy*' \
      > "$logs/memcheck.log" 2>&1
    echo "memcheck rc=$?"; tail -5 "$logs/memcheck.log"
  fi
fi
default_runs="--model preset:llama3.2-1b --pattern 6:8 --dtype fp8 --compare dense --batch 4 --prompt-len 256 --gen-len 32;"
default_runs+="--model preset:qwen2.5-7b --pattern 6:8 --dtype fp8 --compare dense --batch 8 --prompt-len 512 --gen-len 64"
IFS=';' read -ra runs <<< "${RUNS:-$default_runs}"
i=0
for args in "${runs[@]}"; do
  i=$((i + 1))
  if (( $(left) < 20 )); then echo "run $i skipped: DEADLINE reached: $args"; continue; fi
  # shellcheck disable=SC2086
  timeout "$(left)" build-gpu/bin/slidesparse run $args --tuning-cache build-gpu/tuning.json --json "$logs/run-$i.json" \
    > "$logs/run-$i.log" 2>&1
  echo "run $i rc=$?: $args"; grep -v "^run: .*layer [0-9]" "$logs/run-$i.log" | tail -12
done
# TORCH="ARGS;ARGS": PyTorch baselines (scripts/torch_baseline.py) on the same machine.
if [[ -n "${TORCH:-}" ]]; then
  IFS=';' read -ra torch_runs <<< "$TORCH"
  j=0
  for args in "${torch_runs[@]}"; do
    j=$((j + 1))
    if (( $(left) < 20 )); then echo "torch $j skipped: DEADLINE reached: $args"; continue; fi
    # shellcheck disable=SC2086
    timeout "$(left)" /opt/torch/.venv/bin/python scripts/torch_baseline.py $args --json "$logs/torch-$j.json" > "$logs/torch-$j.log" 2>&1
    echo "torch $j rc=$?: $args"; tail -16 "$logs/torch-$j.log"
  done
fi

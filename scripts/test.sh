#!/usr/bin/env bash
# Runs every test suite: the regular build (with the CUDA layer where the toolkit exists; GPU
# tests skip, saying so, without a GPU) and then once more under AddressSanitizer +
# UndefinedBehaviorSanitizer (CPU layers only: the sanitizers do not instrument device code).
# Expects scripts/setup.sh to have run (the README's test command runs both).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
jobs=$(nproc)

echo "=== tests: release build (build/) ==="
# Say up front whether the GPU tests will run or skip (ctest lists skips without the reason).
if [[ -x build/tests/gpu_tests ]]; then
  echo "GPU: $(build/bin/slidesparse info | tail -n 1) (GPU tests skip without a usable GPU)"
fi
ctest --test-dir build --output-on-failure -j "$jobs"

echo "=== tests: AddressSanitizer + UndefinedBehaviorSanitizer build (build-asan/) ==="
./scripts/setup.sh --build-dir "$root/build-asan" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSLIDESPARSE_SANITIZE=ON -DSLIDESPARSE_ENABLE_CUDA=OFF -DSLIDESPARSE_BUILD_BENCH=OFF
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j "$jobs"

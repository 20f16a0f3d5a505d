#!/usr/bin/env bash
# Perplexity of the real model (SmolLM2-135M-Instruct, the GGUF of scripts/setup.sh) on the GPU
# machine: builds the CLI (Release, sm_90a) into build-gpu/, then runs `slidesparse eval ppl`
# with each argument list of EVALS; logs and JSON go to $OUT/ppl-logs.tar.gz.
#
# The device tool carries at most 64 MiB per call, the GGUF is 98 MB: it travels in pieces
# (`split -b 48M` into smollm2.part-aa, -ab, ...), one per call while the machine stays warm.
# A carried piece does not survive the next call inside the checkout there (the tree is synced
# again), so each call copies its piece out to $PIECES (default /root/xfer) first. This script
# joins the pieces when the model is absent and refuses a join whose sha256 is not the published
# one (scripts/setup.sh).
#
# Usage: [OUT=DIR] [EVALS="ARGS;ARGS;..."] [DEADLINE=S] [PIECES=DIR] scripts/gpu_ppl.sh
#        EVALS: ';'-separated argument lists appended to
#        `slidesparse eval ppl --model <gguf> --text <test.txt>` (default: dense and 6:8 on the GPU
#        in BF16). The text is ../shared/data/wikitext-2/test.txt, or .xfer/wikitext-2/test.txt
#        where ../shared did not travel (it does not on the device tool: copy it there and carry
#        .xfer/wikitext-2; arguments may name .xfer/wikitext-2/valid.txt for calibration). DEADLINE: seconds after the start by which every
#        evaluation must end (later ones are skipped), so the logs are packed in time.
set -uo pipefail
# shellcheck source=scripts/gpu_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/gpu_common.sh"
trap 'tar -czf "$OUT/ppl-logs.tar.gz" -C "$OUT" logs' EXIT

model=.deps/models/SmolLM2-135M-Instruct.Q4_1.gguf
sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  # as in scripts/setup.sh
if [[ ! -f "$model" ]]; then
  shopt -s nullglob
  pieces="${PIECES:-/root/xfer}"
  parts=("$pieces"/smollm2.part-*)
  (( ${#parts[@]} )) || { echo "no $model and no $pieces/smollm2.part-* pieces"; exit 3; }
  mkdir -p "$(dirname "$model")"
  cat "${parts[@]}" > "$model.tmp"
  actual=$(sha256sum "$model.tmp" | cut -d' ' -f1)
  if [[ "$actual" != "$sha256" ]]; then
    echo "joined ${#parts[@]} pieces (${parts[*]}): sha256 $actual, expected $sha256 (a piece missing?)"
    rm -f "$model.tmp"
    exit 3
  fi
  mv "$model.tmp" "$model"
  echo "joined ${#parts[@]} pieces into $model (sha256 ok)"
fi

{ cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DSLIDESPARSE_CUSPARSELT_ROOT="$torch_site/nvidia/cusparselt" -DSLIDESPARSE_CUDNN_ROOT="$torch_site/nvidia/cudnn" \
    -DCMAKE_CUDA_ARCHITECTURES=90a-real &&
  cmake --build build-gpu -j 16 --target slidesparse; } > "$logs/build-ppl.log" 2>&1 || { tail -50 "$logs/build-ppl.log"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.limit --format=csv > "$logs/nvidia-smi-ppl.csv" 2>&1

text=../shared/data/wikitext-2/test.txt
[[ -f "$text" ]] || text=.xfer/wikitext-2/test.txt
[[ -f "$text" ]] || { echo "no WikiText-2 test split (../shared/data/wikitext-2 or .xfer/wikitext-2)"; exit 3; }
default_evals="--device gpu --dtype bf16;--device gpu --dtype bf16 --pattern 6:8 --slide"
IFS=';' read -ra evals <<< "${EVALS:-$default_evals}"
i=0
for args in "${evals[@]}"; do
  i=$((i + 1))
  if (( $(left) < 15 )); then echo "eval $i skipped: DEADLINE reached: $args"; continue; fi
  # shellcheck disable=SC2086
  timeout "$(left)" build-gpu/bin/slidesparse eval ppl --model "$model" --text "$text" $args \
    --json "$logs/ppl-$i.json" > "$logs/ppl-$i.log" 2>&1
  echo "eval $i rc=$?: $args"; tail -2 "$logs/ppl-$i.log"
done

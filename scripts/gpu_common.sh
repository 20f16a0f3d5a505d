# Sourced by the scripts that run on the GPU machine (gpu_runtime.sh, gpu_ppl.sh, gpu_quick.sh,
# gpu_mutate.sh, gpu_sparse_mainloop.sh): the absolute $OUT with its logs/ folder ($logs), the checkout as the working
# directory ($root), the machine's PyTorch site-packages ($torch_site: cuSPARSELt and cuDNN),
# nvcc on PATH, and left(): seconds until $DEADLINE (counted from sourcing; large when unset).
OUT="$(realpath -m "${OUT:-./out}")"
started=$SECONDS
left() { echo $(( ${DEADLINE:-100000} - (SECONDS - started) )); }
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"  # this file lives in scripts/ too
cd "$root" || exit 3
logs="$OUT/logs"
mkdir -p "$logs"
torch_site=/opt/torch/.venv/lib/python3.12/site-packages
command -v nvcc >/dev/null || export PATH="/usr/local/cuda/bin:$PATH"

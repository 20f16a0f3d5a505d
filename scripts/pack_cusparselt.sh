#!/usr/bin/env bash
# Packs a newer cuSPARSELt library so it can be carried to the GPU machine, which only has 0.8.0 (in its
# torch venv) and cannot install packages; scripts/unpack_cusparselt.sh restores it there, and
# LD_LIBRARY_PATH makes binaries built against the 0.8.0 headers load it (0.8.1 and 0.10.0 keep the
# soname libcusparseLt.so.0, every exported cusparseLt* symbol, and a cusparseLt.h that differs only in
# its version macros; both ran a 2:4 FP16 GEMM on the H100 that way).
#
# Why it is awkward: libcusparseLt.so.0 is ~230 MB, of which ~150 MB are cubins that NVIDIA already
# stores zstd-compressed, so even `xz -9e` leaves ~145 MiB, while one `run` call carries at most 64 MiB
# (working tree included). Default mode therefore ships a `zstd --patch-from` delta against the 0.8.0
# library the GPU machine already has (byte-identical to the one setup.sh unpacks into .deps/), with a
# zstd binary for it (that machine has xz but no zstd): 64.4 MiB for 0.8.1, whose sm_90 kernels all
# changed. --full ships a standalone xz archive instead (any version; 144 MiB for 0.10.0).
# The result is split evenly into ship1/, ship2/, ... folders of at most --max-mib each: carry ONE
# folder per `run` call, back to back on the same warm machine (it is given back ~30 s after a call
# and then everything on it is lost). Carried ignored folders stay in the repo copy there between
# calls, so the last call can unpack .deps/cusparselt-pack/V directly, e.g.
#   run 1: carry [.deps/cusparselt-pack/V/ship1]   command: true
#   run 2: carry [.deps/cusparselt-pack/V/ship2]   command:
#          eval "$(scripts/unpack_cusparselt.sh .deps/cusparselt-pack/V /tmp/cusparselt-V)" && ...
#
# Usage: scripts/pack_cusparselt.sh VERSION [--full] [--max-mib N]   (VERSION as on PyPI, e.g. 0.8.1)
# Output: .deps/cusparselt-pack/VERSION/ship*/ (MANIFEST, parts.sha256, libcusparseLt.so.0.sha256, parts)
set -euo pipefail

die() { echo "pack_cusparselt: $*" >&2; exit 1; }
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

version="" full=0 max_mib=56
while [[ $# -gt 0 ]]; do
  case "$1" in
    --full) full=1 ;;
    --max-mib) [[ $# -ge 2 ]] || die "--max-mib needs a value"; max_mib="$2"; shift ;;
    -*) die "unknown option '$1'" ;;
    *) [[ -z "$version" ]] || die "one VERSION only"; version="$1" ;;
  esac
  shift
done
[[ -n "$version" ]] || die "usage: $0 VERSION [--full] [--max-mib N]"
[[ "$max_mib" =~ ^[1-9][0-9]*$ ]] || die "--max-mib must be a positive integer"
base="${CUSPARSELT_BASE:-$root/.deps/nvidia/cusparselt/lib/libcusparseLt.so.0}"  # 0.8.0, from setup.sh
for t in python3 unzip sha256sum split; do command -v "$t" >/dev/null || die "'$t' not found"; done
if [[ $full -eq 1 ]]; then
  command -v xz >/dev/null || die "'xz' not found (apt-get install xz-utils)"
else
  command -v zstd >/dev/null || die "'zstd' not found (apt-get install zstd), or use --full"
  [[ -f "$base" ]] || die "base library $base missing: run scripts/setup.sh --no-build, set CUSPARSELT_BASE, or use --full"
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# 1. The wheel (x86_64 whatever this machine is) and the library inside it; its path differs by version
#    (nvidia/cusparselt/lib/ up to 0.8.x, nvidia/cu13/lib/ from 0.9).
echo "pack: fetching nvidia-cusparselt-cu13==$version"
python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
  --dest "$tmp" "nvidia-cusparselt-cu13==$version" || die "pip download failed for version '$version'"
wheel="$(find "$tmp" -maxdepth 1 -name "*.whl" -print -quit)"; [[ -n "$wheel" ]] || die "no wheel downloaded"
member="$(unzip -Z1 "$wheel" | grep -E '/lib/libcusparseLt\.so\.0$' | head -n1)" || true
[[ -n "$member" ]] || die "no lib/libcusparseLt.so.0 in $(basename "$wheel")"
lib="$tmp/libcusparseLt.so.0"
unzip -p "$wheel" "$member" >"$lib"
rm -f "$wheel"

# 2. Compress: a delta against the base (zstd) or a standalone archive (xz).
if [[ $full -eq 1 ]]; then
  method=xz file=libcusparseLt.so.0.xz base_sha=""
  echo "pack: xz -9e (single-threaded, several minutes)"
  xz -9e -T1 -c "$lib" >"$tmp/$file"
else
  method=zstd-patch file=libcusparseLt.so.0.patch.zst
  base_sha="$(sha256sum "$base" | cut -d' ' -f1)"
  echo "pack: zstd -19 --patch-from=$base (a few minutes)"
  zstd -q -19 --long=31 --patch-from="$base" "$lib" -o "$tmp/$file"
  zstd -q -t --long=31 --memory=2048MB --patch-from="$base" "$tmp/$file" || die "patch self-test failed"
fi

# 3. Split evenly into ship folders, each with the small files the unpacker needs.
out="$root/.deps/cusparselt-pack/$version"
rm -rf "$out"; mkdir -p "$out"
size=$(stat -c %s "$tmp/$file")
max=$((max_mib * 1024 * 1024 - 512 * 1024))  # leave room for the small files (and the zstd binary)
n=$(((size + max - 1) / max))
(cd "$tmp" && split -n "$n" -d -a 2 "$file" "$file.part")
(cd "$tmp" && sha256sum "$file".part* >parts.sha256 && sha256sum libcusparseLt.so.0 >libcusparseLt.so.0.sha256)
printf 'version=%s\nmethod=%s\nfile=%s\nparts=%s\nbase_sha256=%s\n' "$version" "$method" "$file" "$n" "$base_sha" >"$tmp/MANIFEST"
i=0
for part in "$tmp/$file".part*; do
  i=$((i + 1)); d="$out/ship$i"; mkdir -p "$d"
  mv "$part" "$d/"
  cp "$tmp/MANIFEST" "$tmp/parts.sha256" "$tmp/libcusparseLt.so.0.sha256" "$d/"
done
# The GPU machine has no zstd; ship this machine's (it needs only libc, libz, liblzma, liblz4 there).
[[ $method == zstd-patch ]] && cp "$(command -v zstd)" "$out/ship1/zstd"

echo "pack: $version  library $(stat -c %s "$lib") B  ->  $method $size B ($(awk "BEGIN{printf \"%.1f\", $size/1048576}") MiB) in $n ship folder(s):"
du -b "$out"/ship* | awk '{printf "  %s  %.1f MiB\n", $2, $1/1048576}'

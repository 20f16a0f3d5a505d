#!/usr/bin/env bash
# Runs on the GPU machine: restores the libcusparseLt.so.0 that scripts/pack_cusparselt.sh packed (its
# header says why and how the ship*/ folders travel), checks its sha256, and prints the LD_LIBRARY_PATH
# line that makes our binaries load it instead of the torch venv's 0.8.0. That works because CMake links
# them with DT_RUNPATH, which LD_LIBRARY_PATH overrides (an old-style DT_RPATH would not be overridden).
#
# Usage: scripts/unpack_cusparselt.sh PACKDIR DEST
#   PACKDIR  folder holding the ship*/ folders (or their files), searched recursively
#   DEST     the library lands in DEST/lib/libcusparseLt.so.0
# A patch pack needs the 0.8.0 base: CUSPARSELT_BASE, else the torch venv's copy.
set -euo pipefail

die() { echo "unpack_cusparselt: $*" >&2; exit 1; }
[[ $# -eq 2 ]] || die "usage: $0 PACKDIR DEST"
packdir="$1" dest="$2"
[[ -d "$packdir" ]] || die "PACKDIR '$packdir' is not a folder"
find_one() { find "$packdir" -name "$1" -type f -print -quit; }

manifest="$(find_one MANIFEST)"; [[ -n "$manifest" ]] || die "no MANIFEST under $packdir"
get() { sed -n "s/^$1=//p" "$manifest"; }
method="$(get method)" version="$(get version)" base_sha="$(get base_sha256)"
meta="$(dirname "$manifest")"

# Gather and check the parts (each ship folder must have come in a run on this same machine).
parts=()
while read -r sum name; do
  p="$(find_one "$name")"
  [[ -n "$p" ]] || die "part '$name' missing under $packdir: carry every ship*/ folder, in back-to-back runs on the same warm machine"
  echo "$sum  $p" | sha256sum -c --status || die "part '$p' is corrupt (sha256 mismatch)"
  parts+=("$p")
done <"$meta/parts.sha256"

mkdir -p "$dest/lib"
dest="$(cd "$dest" && pwd)"
tmpout="$dest/lib/.libcusparseLt.so.0.tmp"
trap 'rm -f "$tmpout"' EXIT
case "$method" in
  xz)
    if command -v xz >/dev/null; then
      cat "${parts[@]}" | xz -dc >"$tmpout"
    else  # Python's lzma is always there
      cat "${parts[@]}" | python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.LZMAFile(sys.stdin.buffer), sys.stdout.buffer)' >"$tmpout"
    fi ;;
  zstd-patch)
    base="${CUSPARSELT_BASE:-/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cusparselt/lib/libcusparseLt.so.0}"
    [[ -f "$base" ]] || die "base library '$base' not found; set CUSPARSELT_BASE to the 0.8.0 libcusparseLt.so.0"
    [[ "$(sha256sum "$base" | cut -d' ' -f1)" == "$base_sha" ]] \
      || die "base '$base' is not the library the patch was made from (sha256 $base_sha); pack with --full instead"
    zstd="$(command -v zstd || true)"
    if [[ -z "$zstd" ]]; then
      zstd="$(find_one zstd)"; [[ -n "$zstd" ]] || die "no zstd here and none in the pack (ship1/zstd)"
      chmod +x "$zstd"
    fi
    "$zstd" -V >/dev/null 2>&1 || die "zstd '$zstd' does not run here (missing libz/liblzma/liblz4?): pack with --full instead"
    cat "${parts[@]}" | "$zstd" -d -q --long=31 --memory=2048MB --patch-from="$base" -o "$tmpout" -f ;;
  *) die "unknown method '$method' in $manifest" ;;
esac

want="$(cut -d' ' -f1 "$meta/libcusparseLt.so.0.sha256")"
[[ "$(sha256sum "$tmpout" | cut -d' ' -f1)" == "$want" ]] || die "restored library has the wrong sha256 (want $want)"
chmod 755 "$tmpout"
mv -f "$tmpout" "$dest/lib/libcusparseLt.so.0"
echo "unpack: cuSPARSELt $version -> $dest/lib/libcusparseLt.so.0 (sha256 ok)" >&2
echo "export LD_LIBRARY_PATH=$dest/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"

#!/usr/bin/env python3
"""Checks, without a GPU, that the hand-written sparse mainloop compiles to the wgmma schedule it
asks for (src/cuda/sm90/sparse_gemm_kernel.cuh, instantiated by bench/sparse_gemm_proto.cu and
by the library's src/cuda/sm90/sparse_gemm.cu; Schedule in sparse_layout.hpp).

ptxas silently serializes wgmma.mma_async (one WARPGROUP.DEPBAR after every QGMMA) when a
register an in-flight chain reads is written by a non-wgmma instruction (C7513), when a function
call sits in the chain (C7510, a printf), when registers run short (C7512) and more, and reports it
only as an "info" line. The kernel is worth nothing if that happens, and no GPU test would show
it except as a slow timing. So this compiles the source to a cubin for sm_90a, fails on any
serialization message, disassembles it (nvdisasm) and, for every instantiated kernel, measures the
chains: runs of sparse wgmma instructions (QGMMA.SP for FP8, IGMMA.SP for INT8) with no
WARPGROUP.DEPBAR between them. A schedule of group G issues four sparse instructions per stage
and G stages per chain, so its longest chain must be 4 G and every chain a multiple of 4 (a whole
stage's batch).

Usage: check_wgmma_schedule.py --nvcc NVCC --nvdisasm NVDISASM SOURCE...
Exit status: 0 pass, 1 fail, 77 skipped (no nvdisasm: scripts/setup.sh installs one into .deps).
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

SKIP = 77
# Template arguments of sparse_gemm<Operand, Out, stages, group, stagger> in the mangled name
# (...sparse_gemmILNS0_7OperandE1E13__nv_bfloat16Li6ELi4ELb0EEEv...: operand 0 E4M3, 1 INT8).
SCHEDULE_RE = re.compile(r"sparse_gemmILN\w*?7OperandE(\d)E(13__nv_bfloat16|f)Li(\d+)ELi(\d+)ELb([01])E")
# The sparse wgmma in SASS: QGMMA.SP (FP8), IGMMA.SP (INT8).
GMMA_RE = re.compile(r"\b[QI]GMMA\.SP\b")


def chains(sass_lines):
    """Lengths of the runs of sparse wgmma instructions not separated by a WARPGROUP.DEPBAR."""
    runs, run = [], 0
    for line in sass_lines:
        if GMMA_RE.search(line):
            run += 1
        elif "WARPGROUP.DEPBAR" in line and run:
            runs.append(run)
            run = 0
    if run:
        runs.append(run)
    return runs


def check_source(args, source):
    """Compiles one source and checks every sparse_gemm kernel in it; False on any problem."""
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "kernel.cubin")
        compile_cmd = [args.nvcc, "-std=c++20", "-O2", "-gencode=arch=compute_90a,code=sm_90a",
                       "-diag-suppress", "177", "-Xptxas", "-v", "-cubin", "-o", cubin, source]
        built = subprocess.run(compile_cmd, capture_output=True, text=True)
        if built.returncode != 0:
            print(built.stdout + built.stderr)
            print("  the source does not compile")
            return False
        messages = [l for l in (built.stdout + built.stderr).splitlines()
                    if "serialized" in l or re.search(r"C75(1\d|20)", l)]
        sass = subprocess.run([args.nvdisasm, cubin], capture_output=True, text=True, check=True).stdout
    ok = True
    for message in messages:
        print("  ptxas:", message[:200])
        ok = False
    # Split the listing by function: ".text.<mangled name>:" opens each.
    functions, current = {}, None
    for line in sass.splitlines():
        opened = re.match(r"\s*\.text\.(\S+):", line)
        if opened:
            current = opened.group(1)
            functions[current] = []
        elif current:
            functions[current].append(line)
    checked = 0
    for name, lines in sorted(functions.items()):
        schedule = SCHEDULE_RE.search(name)
        if not schedule:
            continue
        operand = "int8" if schedule.group(1) == "1" else "e4m3"
        out = "bf16" if "bfloat16" in schedule.group(2) else "f32"
        stages, group, stagger = (int(x) for x in schedule.groups()[2:])
        runs = chains(lines)
        expected = 4 * group
        good = bool(runs) and max(runs) == expected and all(r % 4 == 0 for r in runs)
        print(f"  sparse_gemm<{operand}, {out}, stages {stages}, group {group}, stagger {stagger}>: "
              f"{sum(runs)} sparse wgmma, longest chain {max(runs) if runs else 0} (expected {expected}), "
              f"chains {sorted(set(runs))}: {'ok' if good else 'WRONG'}")
        ok = ok and good
        checked += 1
    if checked == 0:
        print("  no sparse_gemm<Operand, Out, stages, group, stagger> kernel found in the cubin")
        ok = False
    return ok


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nvcc", required=True)
    parser.add_argument("--nvdisasm", default="")
    parser.add_argument("sources", nargs="+")
    args = parser.parse_args()
    if not args.nvdisasm or not os.access(args.nvdisasm, os.X_OK):
        print(f"check_wgmma_schedule: SKIPPED, no nvdisasm ({args.nvdisasm or 'not found'}); "
              "scripts/setup.sh installs one into .deps/nvdisasm")
        return SKIP
    ok = True
    for source in args.sources:
        print(f"{source}:")
        ok = check_source(args, source) and ok
    print(f"check_wgmma_schedule: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

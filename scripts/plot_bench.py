#!/usr/bin/env python3
"""Draws speedup over dense vs M, one line per pattern, from `slidesparse bench` JSON.

One panel per (model, dtype, mode) for the model sum (or the single layer of a square/shape
run). Usage: scripts/plot_bench.py BENCH.json OUT.png
Needs matplotlib (Debian: apt install python3-matplotlib).
"""
import json
import sys


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_bench.py: matplotlib is missing (Debian: apt install python3-matplotlib)", file=sys.stderr)
        return 2
    with open(sys.argv[1]) as f:
        doc = json.load(f)
    comparisons = doc.get("comparisons", [])
    layers_by_model = {}
    for c in comparisons:
        layers_by_model.setdefault(c["model"], set()).add(c["layer"])
    panels = []
    for c in comparisons:
        layer = "sum" if "sum" in layers_by_model[c["model"]] else c["layer"]
        key = (c["model"], c["dtype"], c["mode"], layer)
        if c["layer"] == layer and key not in panels:
            panels.append(key)
    if not panels:
        print("plot_bench.py: no comparisons in the file", file=sys.stderr)
        return 1
    cols = min(2, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.2 * rows), squeeze=False)
    env = doc.get("environment", {})
    for ax, (model, dtype, mode, layer) in zip(axes.flat, panels):
        patterns = sorted({c["pattern"] for c in comparisons if (c["model"], c["dtype"], c["mode"], c["layer"]) == (model, dtype, mode, layer)},
                          key=lambda p: int(p.split(":")[1]))
        for p in patterns:
            pts = sorted((c["m"], c["speedup"]) for c in comparisons
                         if (c["model"], c["dtype"], c["mode"], c["layer"], c["pattern"]) == (model, dtype, mode, layer, p))
            ideal = int(p.split(":")[1]) / (int(p.split(":")[1]) - 2)
            line, = ax.plot([m for m, _ in pts], [s for _, s in pts], marker="o", label=f"{p} (ideal {ideal:.2f}x)")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("M (tokens)")
        ax.set_ylabel("speedup over dense")
        what = "GEMM only" if mode == "gemm" else "whole layer"
        ax.set_title(f"{model} {layer} · {dtype} · {what}", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"{env.get('gpu', '?')} · cuSPARSELt {env.get('cusparselt', '?')} · cuBLASLt {env.get('cublaslt', '?')} · {env.get('date', '')}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)
    print(f"wrote {sys.argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Charts a bms_bench / `bmserve bench` JSON report: decode tokens/s vs batch (log x, log y), one
panel per preset, with the floor line (batch / floor_ms: the throughput the bytes-over-bandwidth
floor allows), the bf16-state points and, when given, the PyTorch peer's rows (bench_peer.py).

  python3 bench/tools/plot_bench.py BENCH_JSON OUT_PNG [--peer PEER_JSON]
"""
import argparse
import json
import sys


def series(rows, preset, kind, mode, state=None):
    pts = sorted((r["size"], r["tokens_per_s"], r.get("floor_ms", 0)) for r in rows
                 if r.get("preset") == preset and r["kind"] == kind and r["mode"] == mode
                 and (state is None or r.get("state") == state))
    return pts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("bench_json")
    ap.add_argument("out_png")
    ap.add_argument("--peer", default="", help="bench_peer.py JSON")
    a = ap.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_bench: matplotlib is not installed (apt-get install python3-matplotlib)",
              file=sys.stderr)
        return 2
    with open(a.bench_json) as f:
        bench = json.load(f)
    rows = bench.get("rows", [])
    for r in rows:  # reports from before the preset field
        r.setdefault("preset", bench.get("preset", "?"))
    peer_rows = []
    if a.peer:
        with open(a.peer) as f:
            peer_rows = json.load(f).get("rows", [])
    presets = []
    for r in rows:
        if r["kind"] == "decode" and r["preset"] not in presets:
            presets.append(r["preset"])
    if not presets:
        print("plot_bench: no decode rows in " + a.bench_json, file=sys.stderr)
        return 1
    fig, axes = plt.subplots(1, len(presets), figsize=(6.5 * len(presets), 5), squeeze=False)
    for ax, preset in zip(axes[0], presets):
        g = series(rows, preset, "decode", "graph", "f32")
        if g:
            ax.plot([p[0] for p in g], [p[1] for p in g], "o-", label="bmserve (graphs, fp32 state)")
            ax.plot([p[0] for p in g], [p[0] / p[2] * 1e3 for p in g], "k--",
                    label="floor (bytes / measured bandwidth)")
        e = series(rows, preset, "decode", "eager", "f32")
        if e:
            ax.plot([p[0] for p in e], [p[1] for p in e], "s:", label="bmserve (eager)")
        b = series(rows, preset, "decode", "graph", "bf16")
        if b:
            ax.plot([p[0] for p in b], [p[1] for p in b], "D", label="bmserve (graphs, bf16 state)")
            ax.plot([p[0] for p in b], [p[0] / p[2] * 1e3 for p in b], "kx",
                    label="floor, bf16 state")
        for mode, style in (("torch-eager", "v-"), ("torch-graph", "^-")):
            p = series(peer_rows, preset, "decode", mode)
            if p:
                ax.plot([x[0] for x in p], [x[1] for x in p], style, alpha=0.8,
                        label=f"PyTorch peer ({mode[6:]})")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("decode batch (sequences)")
        ax.set_ylabel("tokens / s")
        ax.set_title(f"{preset} decode, {bench.get('device', '')}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(a.out_png, dpi=110)
    print(f"plot_bench: wrote {a.out_png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

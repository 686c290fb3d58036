#!/usr/bin/env python3
"""The short table of a device run: per preset and row (decode batch, prefill / TTFT length),
bmserve's time, its floor and ratio, the PyTorch peer's eager and CUDA-graph times and the
bmserve / PyTorch speed-up (peer ms / bmserve ms), then capacity and the host share per step.

  python3 bench/tools/compare_peer.py BENCH_JSON [PEER_JSON]
"""
import json
import sys


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1]) as f:
        bench = json.load(f)
    peer = {"rows": []}
    if len(sys.argv) > 2:
        try:
            with open(sys.argv[2]) as f:
                peer = json.load(f)
        except (OSError, ValueError) as e:
            print(f"(no peer results: {e})")
    idx = {}
    for r in peer.get("rows", []):
        idx[(r["preset"], r["kind"], r["size"], r["mode"])] = r["ms"]
    print(f"device: {bench.get('device')}; copy {bench.get('copy_bytes_per_s', 0) / 1e9:.0f} GB/s, "
          f"bf16 GEMM {bench.get('gemm_bf16_flop_per_s', 0) / 1e12:.0f} TFLOP/s; peer: "
          f"torch {peer.get('torch', '-')}")
    hdr = (f"{'preset':<16} {'row':<16} {'bms ms':>9} {'tok/s':>10} {'floor':>8} {'x_flr':>6} "
           f"{'host%':>6} {'pt-eager':>9} {'pt-graph':>9} {'vs eager':>8} {'vs graph':>8}")
    print(hdr)
    for r in bench.get("rows", []):
        if r["kind"] == "capacity":
            continue
        if r["kind"] == "decode" and r["mode"] == "eager":
            continue
        name = f"{r['kind']} {r['size']}" + (" bf16" if r.get("state") == "bf16" else "")
        pe = pg = None
        if r.get("state") != "bf16":
            pe = idx.get((r["preset"], r["kind"], r["size"], "torch-eager"))
            pg = idx.get((r["preset"], r["kind"], r["size"], "torch-graph"))
        f = lambda v: f"{v:9.3f}" if v else f"{'-':>9}"  # noqa: E731
        s = lambda v: f"{v / r['ms']:7.2f}x" if v else f"{'-':>8}"  # noqa: E731
        host = f"{100 * r.get('host_share', 0):6.1f}" if r["kind"] == "decode" else f"{'-':>6}"
        print(f"{r['preset']:<16} {name:<16} {r['ms']:9.3f} {r['tokens_per_s']:10.0f} "
              f"{r['floor_ms']:8.3f} {r['ratio']:6.2f} {host} {f(pe)} {f(pg)} {s(pe)} {s(pg)}")
    for c in bench.get("capacity", []):
        used = ", ".join(f"{u / 2**30:.3f} GiB after {n}" for n, u in zip(c["contexts"], c["used_bytes"]))
        flat = "flat" if len(set(c["used_bytes"])) <= 1 else "NOT flat"
        print(f"{c['preset']:<16} capacity {c['slots']} fp32 slots (ideal {c['ideal_slots']:.0f}); "
              f"in use {c['used_bytes_before'] / 2**30:.3f} GiB before, {used} ({flat})")
    for e in bench.get("errors", []):
        print("ERROR " + e)
    return 0


if __name__ == "__main__":
    sys.exit(main())

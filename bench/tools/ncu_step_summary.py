#!/usr/bin/env python3
"""Summarizes `ncu --csv --metrics gpu__time_duration.sum` output of bms_bench --profile_steps:
splits the kernel list into steps (each eager step starts with the embedding kernel) and prints,
per step, the total GPU time and the kernels that cost most (calls, us each, us per step).

  python3 bench/tools/ncu_step_summary.py ncu.csv [labels...]
"""
import csv
import re
import sys
from collections import OrderedDict


def short(name):
    name = re.sub(r"\(.*$", "", name)          # drop the argument list
    name = re.sub(r"^void ", "", name)
    name = re.sub(r"bms::cuda::(\(anonymous namespace\)::)?", "", name)
    return name[:60]


def main():
    # One CSV row per (kernel launch, metric): gather the metrics of each launch by its ID.
    launches = OrderedDict()
    with open(sys.argv[1], newline="") as f:
        lines = [l for l in f if l.startswith('"')]
    for r in csv.DictReader(lines):
        k = launches.setdefault(r["ID"], {"name": short(r["Kernel Name"])})
        v = float(r["Metric Value"].replace(",", ""))
        metric, unit = r.get("Metric Name"), r.get("Metric Unit", "")
        if metric == "gpu__time_duration.sum":
            k["us"] = v / 1000.0 if unit in ("ns", "nsecond") else (
                v if unit in ("us", "usecond") else v * 1000.0)
        elif metric.startswith("dram__throughput"):
            k["dram"] = v
        elif metric.startswith("sm__warps_active"):
            k["occ"] = v
    rows = [k for k in launches.values() if "us" in k]
    steps, cur = [], []
    for k in rows:
        if "Embedding" in k["name"] and cur:
            steps.append(cur)
            cur = []
        cur.append(k)
    if cur:
        steps.append(cur)
    labels = sys.argv[2:]
    for i, step in enumerate(steps):
        label = labels[i] if i < len(labels) else f"step {i}"
        agg = OrderedDict()
        for k in step:
            a = agg.setdefault(k["name"], {"n": 0, "us": 0.0, "dram": 0.0, "occ": 0.0})
            a["n"] += 1
            a["us"] += k["us"]
            a["dram"] += k.get("dram", 0.0) * k["us"]  # time-weighted averages
            a["occ"] += k.get("occ", 0.0) * k["us"]
        total = sum(k["us"] for k in step)
        print(f"== {label}: {len(step)} kernels, {total:.0f} us GPU time"
              "   (dram% = DRAM throughput % of peak, occ% = achieved warp occupancy %)")
        for name, a in sorted(agg.items(), key=lambda kv: -kv[1]["us"])[:14]:
            t = a["us"]
            extra = ""
            if a["dram"] or a["occ"]:
                extra = f"  dram {a['dram'] / t:5.1f}%  occ {a['occ'] / t:5.1f}%"
            print(f"  {t:9.0f} us {100*t/total:5.1f}%  {a['n']:4d} x {t/a['n']:8.1f} us{extra}  {name}")


if __name__ == "__main__":
    main()

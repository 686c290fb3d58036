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
    rows = []
    with open(sys.argv[1], newline="") as f:
        lines = [l for l in f if l.startswith('"')]
    for r in csv.DictReader(lines):
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        unit = r.get("Metric Unit", "ns")
        v = float(r["Metric Value"].replace(",", ""))
        us = v / 1000.0 if unit in ("ns", "nsecond") else (v if unit in ("us", "usecond") else v * 1000.0)
        rows.append((short(r["Kernel Name"]), us))
    steps, cur = [], []
    for name, us in rows:
        if "Embedding" in name and cur:
            steps.append(cur)
            cur = []
        cur.append((name, us))
    if cur:
        steps.append(cur)
    labels = sys.argv[2:]
    for i, step in enumerate(steps):
        label = labels[i] if i < len(labels) else f"step {i}"
        agg = OrderedDict()
        for name, us in step:
            c, t = agg.get(name, (0, 0.0))
            agg[name] = (c + 1, t + us)
        total = sum(us for _, us in step)
        print(f"== {label}: {len(step)} kernels, {total:.0f} us GPU time")
        for name, (c, t) in sorted(agg.items(), key=lambda kv: -kv[1][1])[:14]:
            print(f"  {t:9.0f} us {100*t/total:5.1f}%  {c:4d} x {t/c:8.1f} us  {name}")


if __name__ == "__main__":
    main()

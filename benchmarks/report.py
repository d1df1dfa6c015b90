"""Render pytest-benchmark JSON files as the tables of BENCHMARKS.md.

    python3 -m pytest benchmarks --benchmark-json=run1.json   # as many runs as wanted
    python3 benchmarks/report.py run1.json run2.json run3.json

With several runs, each number is the median over the runs; ratios are
computed within each run first (contenders measured in the same run) and
then their median is taken.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from typing import Any


def _contender(name: str) -> str:
    if "[" in name:
        return name.split("[")[1].split("-")[0]
    return name.removeprefix("test_")


def main(paths: list[str]) -> None:
    runs: list[dict[str, Any]] = []
    for path in paths:
        with open(path) as f:
            runs.append(json.load(f))
    m = runs[0]["machine_info"]
    cpu = m.get("cpu", {})
    print(f"Machine: {cpu.get('brand_raw', '?')}, {cpu.get('count')} CPUs, Python "
          f"{m['python_version']} ({m['python_implementation']}); {len(runs)} run(s), first "
          f"{runs[0]['datetime'][:16]}")

    ns: dict[str, list[float]] = defaultdict(list)
    ratio: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        cycle = {b["name"]: b["stats"]["median"] / b["extra_info"]["cycles_per_round"] * 1e9
                 for b in run["benchmarks"] if b["group"] == "cycle"}
        base = cycle.get("test_fastpool_acquire_release")
        for name, value in cycle.items():
            ns[name].append(value)
            if base:
                ratio[name].append(value / base)
    if ns:
        print("\n| contender | median ns per cycle | contender / fastpool acquire+release |")
        print("|---|---:|---:|")
        for name in sorted(ns, key=lambda n: statistics.median(ns[n])):
            r = f"{statistics.median(ratio[name]):.2f}" if ratio[name] else "-"
            print(f"| {_contender(name)} | {statistics.median(ns[name]):,.0f} | {r} |")

    groups = sorted({b["group"] for run in runs for b in run["benchmarks"]
                     if b["group"].startswith("contention")},
                    key=lambda g: int(g.split("-")[1]))
    for group in groups:
        stats: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for run in runs:
            rows = {_contender(b["name"]): b["extra_info"] for b in run["benchmarks"]
                    if b["group"] == group}
            fast = rows.get("fastpool", {}).get("cycles_per_s")
            for name, e in rows.items():
                for key in ("cycles_per_s", "fairness_max_over_min", "longest_gap_ms"):
                    stats[name][key].append(e[key])
                if fast:
                    stats[name]["speedup"].append(fast / e["cycles_per_s"])
        print(f"\n{group}:\n")
        print("| contender | cycles/s | fastpool / contender | fairness (max/min) | "
              "longest gap ms |")
        print("|---|---:|---:|---:|---:|")
        for name in sorted(stats, key=lambda n: -statistics.median(stats[n]["cycles_per_s"])):
            s = stats[name]

            def med(key: str, s: dict[str, list[float]] = s) -> float:
                return statistics.median(s[key])

            sp = f"{med('speedup'):.2f}" if s["speedup"] else "-"
            print(f"| {name} | {med('cycles_per_s'):,.0f} | {sp} | "
                  f"{med('fairness_max_over_min'):,.2f} | {med('longest_gap_ms'):,.0f} |")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Render pytest-benchmark JSON files as the tables of BENCHMARKS.md.

    python3 -m pytest benchmarks --benchmark-json=run1.json   # as many runs as wanted
    python3 benchmarks/report.py run1.json run2.json run3.json

With several runs, each number is the median over the runs and each ratio
is the ratio of those medians.

Groups whose benchmarks record ``queries_per_round`` in extra_info (the
driver benchmarks, test_bench_drivers.py) get one table each: microseconds per
query, and when the group has a ``raw`` contender the overhead over it,
``(contender - raw) / raw`` in percent.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from typing import Any


def _contender(name: str) -> str:
    if "[" in name:
        return name.split("[")[1].rstrip("]").split("-")[0]
    return name.removeprefix("test_")


def _per_query_tables(runs: list[dict[str, Any]]) -> None:
    """One table per group of per-query benchmarks (extra_info queries_per_round)."""
    groups: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    for run in runs:
        for b in run["benchmarks"]:
            extra = b.get("extra_info", {})
            if "queries_per_round" not in extra or b["group"] == "cycle" \
                    or b["group"].startswith("contention"):
                continue
            s = groups[b["group"]][extra.get("contender") or _contender(b["name"])]
            s["us"].append(b["stats"]["median"] / extra["queries_per_round"] * 1e6)
            for key in ("paired_overhead_pct", "server_round_trips_per_query"):
                if key in extra:
                    s[key].append(extra[key])
    for group in sorted(groups):
        stats = groups[group]
        med = {name: statistics.median(s["us"]) for name, s in stats.items()}
        raw = med.get("raw")
        fast = med.get("fastpool_acquire_release")
        print(f"\n{group}:\n")
        print("| contender | µs per query | overhead vs raw | paired overhead vs raw | "
              "contender / fastpool | server round trips per query |")
        print("|---|---:|---:|---:|---:|---:|")
        for name in sorted(med, key=med.__getitem__):
            s = stats[name]
            over = f"{(med[name] - raw) / raw * 100:+.2f}%" if raw and name != "raw" else "-"
            paired = (f"{statistics.median(s['paired_overhead_pct']):+.2f}%"
                      if s["paired_overhead_pct"] else "-")
            ratio = f"{med[name] / fast:.2f}" if fast else "-"
            trips = (f"{statistics.median(s['server_round_trips_per_query']):.2f}"
                     if s["server_round_trips_per_query"] else "-")
            print(f"| {name} | {med[name]:,.2f} | {over} | {paired} | {ratio} | {trips} |")


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
    for run in runs:
        for b in run["benchmarks"]:
            if b["group"] == "cycle":
                ns[b["name"]].append(
                    b["stats"]["median"] / b["extra_info"]["cycles_per_round"] * 1e9)
    if ns:
        med = {name: statistics.median(values) for name, values in ns.items()}
        base = med.get("test_fastpool_acquire_release")
        print("\n| contender | median ns per cycle | contender / fastpool acquire+release |")
        print("|---|---:|---:|")
        for name in sorted(med, key=med.__getitem__):
            r = f"{med[name] / base:.2f}" if base else "-"
            print(f"| {_contender(name)} | {med[name]:,.0f} | {r} |")

    groups = sorted({b["group"] for run in runs for b in run["benchmarks"]
                     if b["group"].startswith("contention")},
                    key=lambda g: int(g.split("-")[1]))
    for group in groups:
        stats: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for run in runs:
            for b in run["benchmarks"]:
                if b["group"] == group:
                    for key in ("cycles_per_s", "fairness_max_over_min", "longest_gap_ms"):
                        stats[_contender(b["name"])][key].append(b["extra_info"][key])
        fast = statistics.median(stats["fastpool"]["cycles_per_s"]) if "fastpool" in stats \
            else None
        print(f"\n{group}:\n")
        print("| contender | cycles/s | fastpool / contender | fairness (max/min) | "
              "longest gap ms |")
        print("|---|---:|---:|---:|---:|")
        for name in sorted(stats, key=lambda n: -statistics.median(stats[n]["cycles_per_s"])):
            s = stats[name]

            def med(key: str, s: dict[str, list[float]] = s) -> float:
                return statistics.median(s[key])

            sp = f"{fast / med('cycles_per_s'):.2f}" if fast else "-"
            print(f"| {name} | {med('cycles_per_s'):,.0f} | {sp} | "
                  f"{med('fairness_max_over_min'):,.2f} | {med('longest_gap_ms'):,.0f} |")

    _per_query_tables(runs)


if __name__ == "__main__":
    main(sys.argv[1:])

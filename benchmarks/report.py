"""Render a pytest-benchmark JSON file as the tables of BENCHMARKS.md.

    python3 -m pytest benchmarks --benchmark-json=bench.json
    python3 benchmarks/report.py bench.json
"""

from __future__ import annotations

import json
import sys


def main(path: str) -> None:
    with open(path) as f:
        data = json.load(f)
    m = data["machine_info"]
    print(f"Machine: {m.get('cpu', {}).get('brand_raw', '?')}, {m.get('cpu', {}).get('count')} "
          f"CPUs, Python {m['python_version']} ({m['python_implementation']}); "
          f"run {data['datetime']}")
    cycle = [b for b in data["benchmarks"] if b["group"] == "cycle"]
    if cycle:
        per = {b["name"]: b["stats"]["median"] / b["extra_info"]["cycles_per_round"] * 1e9
               for b in cycle}
        base = per.get("test_fastpool_acquire_release")
        print("\n| contender | median ns per cycle | x fastpool acquire+release |")
        print("|---|---:|---:|")
        for name, ns in sorted(per.items(), key=lambda kv: kv[1]):
            ratio = f"{ns / base:.2f}" if base else "-"
            print(f"| {name.removeprefix('test_')} | {ns:,.0f} | {ratio} |")
    groups = sorted({b["group"] for b in data["benchmarks"] if b["group"].startswith("contention")})
    for group in groups:
        rows = [b for b in data["benchmarks"] if b["group"] == group]
        fast = next((b["extra_info"]["cycles_per_s"] for b in rows
                     if "fastpool" in b["name"]), None)
        print(f"\n{group}:\n")
        print("| contender | cycles/s | fastpool / contender | fairness (max/min) | "
              "longest gap ms |")
        print("|---|---:|---:|---:|---:|")
        for b in sorted(rows, key=lambda b: -b["extra_info"]["cycles_per_s"]):
            e = b["extra_info"]
            name = b["name"].split("[")[1].split("-")[0]
            ratio = f"{fast / e['cycles_per_s']:.2f}" if fast else "-"
            print(f"| {name} | {e['cycles_per_s']:,.0f} | {ratio} | "
                  f"{e['fairness_max_over_min']:.2f} | {e['longest_gap_ms']:,.0f} |")


if __name__ == "__main__":
    main(sys.argv[1])

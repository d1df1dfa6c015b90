"""Pool sizing on real servers: the advisor's predictions against measurements,
and the adaptive limit against a sweep of fixed sizes (BENCHMARKS.md "Pool sizing").

    flock -s /tmp/fp-quiet.lock python3 benchmarks/sizing_validation.py [--quick]

1. **Too small**: Poisson arrivals (100/s) each holding a connection for a
   20 ms server sleep (``pg_sleep`` / ``SLEEP``) on a pool of 3 for 8 s;
   ``pool.advice()`` recommends a size; the pool is resized and the same
   arrivals run again for 40 s (waits come in bursts: a short run's p99 is
   noise): predicted vs measured p99 wait and utilization.
2. **Far too large**: the same arrivals on a pool of 32 (all open); the advice
   shrinks it; measured again.
3. **Adaptive limit**: 24 threads running a query that burns server CPU
   (``generate_series`` sum / ``BENCHMARK(MD5)``) back to back, on fixed sizes
   (the sweep: throughput, p99 hold; the knee is the size of greatest power,
   throughput / mean latency) and on ``max_size="auto"`` (ceiling 32), in
   interleaved rounds (medians of 5) so that all see the same drift of a shared
   machine: where the limit settles, its throughput and p99 hold against the
   best fixed size, the knee and the oversized pool.

Results: a table on stdout and JSON in benchmarks/results/sizing/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tests.fix_load import ClosedLoop, open_loop

import fastpool
from fastpool.cli.sweep import knee
from fastpool.pool.sizing import erlang_c

SERVERS = {
    "postgresql": (os.environ.get("FASTPOOL_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"),
                   "SELECT pg_sleep(0.02)", "SELECT sum(x) FROM generate_series(1, 200000) x"),
    "mariadb": (os.environ.get("FASTPOOL_MYSQL_DSN", "mysql://root@127.0.0.1:3306/test"),
                "SELECT SLEEP(0.02)", "SELECT BENCHMARK(30000, MD5('x'))"),
}
RATE = 100.0
FIXED = (1, 2, 3, 4, 6, 8, 16, 32)


def measured(pool: Any) -> dict[str, float]:
    s = pool.stats()
    return {"wait_p99": s.acquire_wait_p99, "utilization": s.utilization,
            "waits": s.waits / max(s.acquisitions, 1), "hold_p99": s.hold_p99}


def advisor_case(url: str, sql: str, size: int, seconds: float, after_seconds: float,
                 ) -> dict[str, Any]:
    with fastpool.create_pool(url, min_size=size, max_size=size, name=f"advice-{size}") as pool:
        pool.wait()
        pool.stats(reset=True)
        open_loop(pool, RATE, sql, seconds)
        before = measured(pool)
        advice = pool.advice()
        pool.resize(advice.max_size, advice.max_size)  # all open: utilization as the model's
        pool.wait()
        pool.stats(reset=True)
        # Waits come in bursts: a p99 near the 1% boundary needs a long run to settle.
        open_loop(pool, RATE, sql, after_seconds, seed=16)
        after = measured(pool)
        predicted_waits = erlang_c(advice.max_size, advice.arrival_rate * advice.hold_mean)
        return {"size": size, "advice": advice.as_dict(), "predicted_waits": predicted_waits,
                "before": before, "after": after}


def slot(pool: Any, sql: str, threads: int, seconds: float) -> dict[str, Any]:
    """``threads`` back-to-back callers on ``pool`` for ``seconds`` (after 0.5 s of warm-up)."""
    load = ClosedLoop(pool, sql, threads)
    limits = []
    try:
        time.sleep(0.5)
        pool.stats(reset=True)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.25)
            limits.append(pool.max_size)
        s = pool.stats()
        raw = pool._snapshot(False)["hold"]
    finally:
        load.stop()
    return {"throughput": s.releases / s.window, "hold_p50": s.hold_p50,
            "hold_p99": s.hold_p99, "limits": limits,
            "hold_mean": raw["total"] / raw["count"] / 1e9 if raw["count"] else 0.0}


def interleaved(url: str, sql: str, threads: int, seconds: float, rounds: int,
                ) -> dict[str, Any]:
    """Rounds of one slot per fixed size and one of an adaptive pool (kept across
    rounds, warmed up first), so that every configuration sees the same drift of a
    shared machine; medians over the rounds."""
    runs: dict[str, list[dict[str, Any]]] = {"auto": [], **{str(n): [] for n in FIXED}}
    with fastpool.create_pool(url, max_size="auto", max_size_ceiling=32, name="auto") as auto:
        warm = slot(auto, sql, threads, 15.0)
        for _ in range(rounds):
            runs["auto"].append(slot(auto, sql, threads, seconds))
            for size in FIXED:
                with fastpool.create_pool(url, min_size=size, max_size=size,
                                          name=f"fixed-{size}") as pool:
                    pool.wait()
                    runs[str(size)].append(slot(pool, sql, threads, seconds))
    table = {key: {m: statistics.median(r[m] for r in rs)
                   for m in ("throughput", "hold_p50", "hold_p99", "hold_mean")}
             for key, rs in runs.items()}
    limits = [lim for r in runs["auto"] for lim in r["limits"]]
    table["auto"].update(limits_warmup=warm["limits"], limits=limits,
                         limit_median=statistics.median(limits), limit_min=min(limits),
                         limit_max=max(limits))
    return {"median": table, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--server", choices=sorted(SERVERS), action="append")
    parser.add_argument("--part", choices=("advice", "adaptive"), action="append",
                        help="only this part (default: both)")
    args = parser.parse_args()
    phase = 4.0 if args.quick else 8.0
    results: dict[str, Any] = {"machine": platform.platform(), "cpus": os.cpu_count(),
                               "python": platform.python_version(), "rate": RATE,
                               "time": time.strftime("%Y-%m-%d %H:%M:%S"), "servers": {}}
    for name in args.server or sorted(SERVERS):
        url, hold_sql, burn_sql = SERVERS[name]
        out: dict[str, Any] = {}
        results["servers"][name] = out
        parts = args.part or ["advice", "adaptive"]
        for size in (3, 32) if "advice" in parts else ():
            case = advisor_case(url, hold_sql, size, phase, 5 * phase)
            out[f"advice_from_{size}"] = case
            a = case["advice"]
            print(f"{name} pool {size}: advice {a['summary']} ({a['reason']}); measured p99 "
                  f"wait {case['before']['wait_p99'] * 1e3:.2f} ms -> "
                  f"{case['after']['wait_p99'] * 1e3:.2f} ms, waited {case['after']['waits']:.2%}"
                  f" (predicted {case['predicted_waits']:.2%}), utilization "
                  f"{case['before']['utilization']:.0%} -> {case['after']['utilization']:.0%} "
                  f"(predicted {a['predicted_utilization']:.0%})", flush=True)
        if "adaptive" not in parts:
            continue
        rounds = 3 if args.quick else 5
        res = interleaved(url, burn_sql, 24, phase / 2, rounds)
        med = res["median"]
        fixed = [dict(size=n, **med[str(n)]) for n in FIXED]
        for row in fixed:
            print(f"{name} fixed {row['size']:2d}: {row['throughput']:7.1f}/s hold p50 "
                  f"{row['hold_p50'] * 1e3:7.1f} ms p99 {row['hold_p99'] * 1e3:7.1f} ms",
                  flush=True)
        k = knee([r["size"] for r in fixed], [r["throughput"] for r in fixed],
                 [r["hold_mean"] for r in fixed])
        auto = med["auto"]
        best = max(fixed, key=lambda r: r["throughput"])
        out.update(interleaved=res, knee=k, best_fixed=best)
        print(f"{name} knee {k}; auto limit {auto['limit_min']}..{auto['limit_max']} (median "
              f"{auto['limit_median']}), {auto['throughput']:.1f}/s vs best fixed "
              f"{best['size']} {best['throughput']:.1f}/s and knee {med[str(k)]['throughput']:.1f}"
              f"/s; p99 hold {auto['hold_p99'] * 1e3:.0f} ms vs {fixed[-1]['hold_p99'] * 1e3:.0f}"
              f" ms at {fixed[-1]['size']}", flush=True)
    folder = os.path.join(os.path.dirname(__file__), "results", "sizing")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, time.strftime("%Y-%m-%dT%H%M%S") + ".json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    print(f"results: {path}")


if __name__ == "__main__":
    main()

"""The ``fastpool`` command.

``fastpool bench``: N threads doing acquire -> simple query -> release for a
duration, against the embedded default (an SQLite file in a temporary
directory) or ``--url``; a progress bar while it runs, then a table of
throughput, fairness, acquire-wait percentiles, utilization and the pool's
stats (``--json`` for machine-readable output).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any, TextIO

from fastpool.errors import FastpoolError
from fastpool.pool import create_pool


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastpool", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="run a pool workload and report throughput and waits")
    bench.add_argument("--url", help="database URL (default: an SQLite file in a temp dir)")
    bench.add_argument("--threads", type=_positive_int, default=8, help="worker threads (8)")
    bench.add_argument("--duration", type=_positive_float, default=5.0, help="seconds (5)")
    bench.add_argument("--min-size", type=int, default=None, help="pool min_size (= max-size)")
    bench.add_argument("--max-size", type=_positive_int, default=4, help="pool max_size (4)")
    bench.add_argument("--query", default="SELECT 1", help="statement each cycle runs")
    bench.add_argument("--json", action="store_true", help="print the results as JSON")
    bench.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                       help="progress bar on stderr (auto: when it is a terminal)")
    return parser


def _worker(pool: Any, query: str, start: threading.Barrier, stop: threading.Event,
            counts: list[int], slot: int, max_gap: list[float],
            errors: list[BaseException]) -> None:
    n = 0
    start.wait()  # every thread begins together: no head start skews fairness
    last = time.perf_counter()
    gap = 0.0
    try:
        while not stop.is_set():
            with pool.connection() as conn:
                cur = conn.cursor()
                cur.execute(query)
                cur.fetchall()
                cur.close()
            n += 1
            now = time.perf_counter()
            gap = max(gap, now - last)
            last = now
            if not n & 63:
                counts[slot] = n
    except BaseException as exc:
        errors.append(exc)
    counts[slot] = n
    max_gap[slot] = gap


def _progress(out: TextIO, elapsed: float, duration: float, done: int) -> None:
    width = 30
    frac = min(elapsed / duration, 1.0)
    bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
    rate = done / elapsed if elapsed > 0 else 0.0
    out.write(f"\r[{bar}] {elapsed:5.1f}/{duration:.1f}s {done:>10,} cycles {rate:>10,.0f}/s")
    out.flush()


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    tmp = None
    url = args.url
    if url is None:
        tmp = tempfile.TemporaryDirectory(prefix="fastpool-bench-")
        url = f"sqlite:///{os.path.join(tmp.name, 'bench.db')}"
    min_size = args.max_size if args.min_size is None else args.min_size
    try:
        with create_pool(url, min_size=min_size, max_size=args.max_size, name="bench") as pool:
            pool.wait(timeout=30.0)
            pool.stats(reset=True)
            stop = threading.Event()
            barrier = threading.Barrier(args.threads + 1)
            counts = [0] * args.threads
            gaps = [0.0] * args.threads
            errors: list[BaseException] = []
            threads = [threading.Thread(target=_worker, daemon=True,
                                        args=(pool, args.query, barrier, stop, counts, i, gaps,
                                              errors))
                       for i in range(args.threads)]
            show = args.progress == "always" or (
                args.progress == "auto" and sys.stderr.isatty() and not args.json)
            for t in threads:
                t.start()
            barrier.wait()
            start = time.perf_counter()
            while (elapsed := time.perf_counter() - start) < args.duration and not errors:
                if show:
                    _progress(sys.stderr, elapsed, args.duration, sum(counts))
                time.sleep(min(0.2, max(args.duration - elapsed, 0.0)))
            stop.set()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - start
            if show:
                _progress(sys.stderr, elapsed, args.duration, sum(counts))
                sys.stderr.write("\n")
            if errors:
                raise errors[0]
            stats = pool.stats()
            driver = pool.driver.describe()
    finally:
        if tmp is not None:
            tmp.cleanup()
    total = sum(counts)
    return {
        "url": driver,
        "threads": args.threads,
        "max_size": args.max_size,
        "query": args.query,
        "duration": elapsed,
        "cycles": total,
        "throughput": total / elapsed,
        "fairness": (max(counts) / min(counts)) if min(counts) else None,
        "per_thread_min": min(counts),
        "per_thread_max": max(counts),
        "longest_gap": max(gaps),
        "acquire_wait_p50": stats.acquire_wait_p50,
        "acquire_wait_p99": stats.acquire_wait_p99,
        "acquire_wait_max": stats.acquire_wait_max,
        "utilization": stats.utilization,
        "stats": stats.as_dict(),
    }


def _fmt_s(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


def format_table(r: dict[str, Any]) -> str:
    fairness = "n/a (a thread never ran)" if r["fairness"] is None else f"{r['fairness']:.2f}"
    rows = [
        ("database", r["url"]),
        ("threads / max_size", f"{r['threads']} / {r['max_size']}"),
        ("query", r["query"]),
        ("duration", f"{r['duration']:.2f} s"),
        ("cycles", f"{r['cycles']:,}"),
        ("throughput", f"{r['throughput']:,.0f} cycles/s"),
        ("per-thread cycles min/max", f"{r['per_thread_min']:,} / {r['per_thread_max']:,}"),
        ("fairness (max/min)", fairness),
        ("longest gap between cycles", _fmt_s(r["longest_gap"])),
        ("acquire wait p50", _fmt_s(r["acquire_wait_p50"])),
        ("acquire wait p99", _fmt_s(r["acquire_wait_p99"])),
        ("acquire wait max", _fmt_s(r["acquire_wait_max"])),
        ("utilization", f"{r['utilization']:.1%}"),
    ]
    s = r["stats"]
    for key in ("open", "idle", "in_use", "acquisitions", "waits", "timeouts", "handoffs",
                "opened", "closed_total", "probes", "connect_errors"):
        rows.append((f"pool {key}", f"{s[key]:,}"))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    rule = "-" * max(len(line) for line in lines)
    return "\n".join(["fastpool bench", rule, *lines, rule])


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.min_size is not None and not 0 <= args.min_size <= args.max_size:
        print(f"fastpool bench: --min-size must be between 0 and --max-size "
              f"({args.max_size}), got {args.min_size}", file=sys.stderr)
        return 2
    try:
        result = run_bench(args)
    except (FastpoolError, OSError) as exc:
        print(f"fastpool bench: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(format_table(result))
    return 0

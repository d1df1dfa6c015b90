"""``fastpool bench --sweep 1,2,4,8,16,32 [--plot sweep.png]``: find the database's knee.

The bench workload runs once per pool size (a fresh pool each time, all its
connections open, twice as many threads as the largest size unless
``--threads`` says otherwise, so that every size is kept busy and has callers
queued). Each size reports throughput,
the query latency (how long a connection was held: p50, p99), the acquire
wait p99 and the utilization.

The **knee** is the size of greatest *power*, throughput / p50 latency
(Kleinrock's measure of the best operating point): below it more connections
add throughput at the same latency; past it they add latency and no
throughput. ``--plot`` draws throughput and latency against the size with the
knee marked, as a PNG (matplotlib, headless; ``pip install 'fastpool[bench]'``).
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["format_sweep", "knee", "parse_sizes", "plot", "run_sweep"]


def parse_sizes(text: str) -> list[int]:
    """``"1,2,4,8"`` -> ``[1, 2, 4, 8]`` (sorted, no repeats, each >= 1)."""
    try:
        sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated pool sizes, e.g. 1,2,4,8; got {text!r}") from None
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError(f"pool sizes must be >= 1, got {text!r}")
    return sizes


def knee(sizes: Sequence[int], throughputs: Sequence[float],
         latencies: Sequence[float]) -> int:
    """The size of greatest power (throughput / latency); the smallest on a tie."""
    best, best_power = sizes[0], -1.0
    for size, x, lat in zip(sizes, throughputs, latencies, strict=True):
        power = x / lat if lat > 0 else 0.0
        if power > best_power * (1 + 1e-9):
            best, best_power = size, power
    return best


def run_sweep(args: argparse.Namespace, run_one: Callable[[argparse.Namespace], dict[str, Any]],
              ) -> dict[str, Any]:
    """Run ``run_one`` (the bench) at each size of ``args.sweep``; the rows and the knee."""
    rows = []
    threads = args.threads if args.threads_given else 2 * max(args.sweep)
    for size in args.sweep:
        one = copy.copy(args)
        one.max_size, one.min_size, one.threads, one.progress = size, size, threads, "never"
        if args.progress != "never" and not args.json:
            print(f"fastpool bench --sweep: max_size {size}, {threads} threads, "
                  f"{args.duration:g} s ...", file=sys.stderr, flush=True)
        r = run_one(one)
        s = r["stats"]
        rows.append({"max_size": size, "throughput": r["throughput"],
                     "latency_p50": s["hold_p50"], "latency_p99": s["hold_p99"],
                     "acquire_wait_p99": r["acquire_wait_p99"],
                     "utilization": r["utilization"], "cycles": r["cycles"]})
        url = r["url"] if args.url is not None else "sqlite (the embedded default)"
    found = knee([r["max_size"] for r in rows], [r["throughput"] for r in rows],
                 [r["latency_p50"] for r in rows])
    return {"url": url, "threads": threads, "query": args.query, "duration": args.duration,
            "sizes": rows, "knee": found}


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}" if seconds < 0.01 else f"{seconds * 1e3:.1f}"


def format_sweep(result: dict[str, Any]) -> str:
    """The sweep as a table, the knee's row marked."""
    head = ("max_size", "cycles/s", "p50 ms", "p99 ms", "wait p99 ms", "utilization", "")
    lines = [head]
    for r in result["sizes"]:
        lines.append((str(r["max_size"]), f"{r['throughput']:,.0f}", _ms(r["latency_p50"]),
                      _ms(r["latency_p99"]), _ms(r["acquire_wait_p99"]),
                      f"{r['utilization']:.0%}",
                      "<- knee" if r["max_size"] == result["knee"] else ""))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = ["  ".join(cell.rjust(w) if i < len(head) - 1 else cell
                      for i, (cell, w) in enumerate(zip(line, widths, strict=True))).rstrip()
            for line in lines]
    rule = "-" * max(len(line) for line in text)
    title = (f"fastpool bench --sweep: {result['url']}, {result['threads']} threads, "
             f"{result['query']!r}, {result['duration']:g} s per size")
    note = ("latency: how long each cycle held its connection; knee: the size of greatest "
            "throughput / p50 latency")
    return "\n".join([title, rule, text[0], rule, *text[1:], rule,
                      f"knee: max_size {result['knee']}", note])


def plot(result: dict[str, Any], path: str) -> None:
    """Throughput and latency against pool size, the knee marked, as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display needed
    import matplotlib.pyplot as plt

    rows = result["sizes"]
    sizes = [r["max_size"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    try:
        ax.plot(sizes, [r["throughput"] for r in rows], "o-", color="tab:blue",
                label="throughput")
        ax.set_xlabel("max_size (connections)")
        ax.set_ylabel("throughput (cycles/s)", color="tab:blue")
        ax.set_ylim(0, 1.15 * max(r["throughput"] for r in rows))  # room for the knee's label
        if len(sizes) > 1 and sizes[-1] / sizes[0] >= 8:
            ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(s) for s in sizes])
        lat = ax.twinx()
        lat.plot(sizes, [r["latency_p50"] * 1e3 for r in rows], "s--", color="tab:orange",
                 label="latency p50")
        lat.plot(sizes, [r["latency_p99"] * 1e3 for r in rows], "^:", color="tab:red",
                 label="latency p99")
        lat.set_ylabel("latency (ms held)", color="tab:red")
        lat.set_ylim(bottom=0)
        ax.axvline(result["knee"], color="grey", linestyle="--", linewidth=1)
        ax.annotate(f"knee: {result['knee']}", xy=(result["knee"], 1.0),
                    xycoords=("data", "axes fraction"), xytext=(4, -14),
                    textcoords="offset points", color="grey")
        handles = ax.get_legend_handles_labels()[0] + lat.get_legend_handles_labels()[0]
        ax.legend(handles, [str(h.get_label()) for h in handles], loc="center left",
                  fontsize="small", framealpha=0.8)
        query = result["query"] if len(result["query"]) <= 40 else result["query"][:37] + "..."
        ax.set_title(f"fastpool bench --sweep: {result['url']}\n{result['threads']} threads, "
                     f"{query}", fontsize="medium")
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)

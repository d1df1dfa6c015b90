"""The ``fastpool`` command.

``fastpool bench``: N threads doing acquire -> simple query -> release for a
duration, against the embedded default (an SQLite file in a temporary
directory) or ``--url``; a progress bar while it runs, then a table of
throughput, fairness, acquire-wait percentiles, utilization and the pool's
stats (``--json`` for machine-readable output). ``--async``: the same with N
asyncio tasks on an ``AsyncPool`` (aiosqlite on the embedded default), each
cycle an ``await pool.fetch(query)``; ``--uvloop`` runs them on uvloop.
``--sweep 1,2,4,8,16,32``: the workload at each pool size, with the knee
marked, ``--plot sweep.png`` draws it (``fastpool.cli.sweep``). Unless
``--no-compare`` (or ``--sweep``), the same workload then runs through each
peer pool installed that fits the URL (SQLAlchemy QueuePool, DBUtils PooledDB,
psycopg_pool, asyncpg's pool) and one table compares them
(``fastpool.cli.compare``).

``fastpool top``: a live view of pools (gauges, counters with rates, the
acquire-wait histogram, the connections in use) refreshed every second, from a
running process's debug endpoint (``--endpoint``, see
``fastpool.monitoring.serve``) or from a pool it opens on ``--url`` and keeps
busy with the bench workload.

``fastpool load``: load a CSV file (or standard input) into a table in one
transaction through ``fastpool.writes.bulk`` (COPY on PostgreSQL, multi-row INSERTs
on MySQL, executemany on SQLite), with a progress bar, then the rows loaded
and rows/s. Fields arrive as strings and the server converts them; a field
becomes NULL only when it equals ``--null`` (``--null ''`` for empty fields).
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import collections
import contextlib
import csv
import io
import json
import logging
import os
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn, TextIO

from fastpool.errors import ConfigError
from fastpool.options import MAX_INT, MAX_POOL_SIZE, integer, seconds
from fastpool.pool import create_pool
from fastpool.pool.async_facade import create_async_pool
from fastpool.steps import Steps, run, run_async


class _Parser(argparse.ArgumentParser):
    """argparse's refusals as every fastpool command error is reported: one
    line, ``fastpool <command>: ...``, exit 2 (no usage block; ``-h`` has it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}\n")


def _checked(check: Callable[[Any], Any], convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type: ``convert`` the text, then ``check`` it with the
    option validators (``fastpool.options``), whose message names the range."""
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = text  # the validator refuses it, naming what it must be
        try:
            return check(value)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc).strip()) from None
    return parse


def _int_from(minimum: int, maximum: int = MAX_INT) -> Callable[[str], int]:
    return _checked(lambda v: integer("", v, minimum, maximum=maximum), int)


_positive_int = _int_from(1)
_non_negative_int = _int_from(0)
_pool_size = _int_from(1, MAX_POOL_SIZE)
_min_size = _int_from(0, MAX_POOL_SIZE)
_positive_float = _checked(lambda v: seconds("", v, allow_zero=False), float)


def _encoding(text: str) -> str:
    try:
        return codecs.lookup(text).name
    except LookupError:
        raise argparse.ArgumentTypeError(f"unknown encoding {text!r}") from None


def _one_line(command: str, exc: BaseException) -> str:
    """``exc`` as the command's one line (a driver's message may span several)."""
    message = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return f"fastpool {command}: {type(exc).__name__}: {message or repr(exc)}"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fastpool", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="run a pool workload and report throughput and waits")
    bench.add_argument("--url", help="database URL (default: an SQLite file in a temp dir)")
    bench.add_argument("--threads", type=_positive_int, default=None,
                       help="worker threads (8; with --sweep: twice the largest size)")
    bench.add_argument("--duration", type=_positive_float, default=5.0,
                       help="seconds (5), for each pool with the comparison")
    bench.add_argument("--min-size", type=_min_size, default=None,
                       help="pool min_size (= max-size)")
    bench.add_argument("--max-size", type=_pool_size, default=4, help="pool max_size (4)")
    bench.add_argument("--query", default="SELECT 1", help="statement each cycle runs")
    bench.add_argument("--json", action="store_true", help="print the results as JSON")
    bench.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                       help="progress bar on stderr (auto: when it is a terminal)")
    bench.add_argument("--async", dest="use_async", action="store_true",
                       help="asyncio tasks (--threads of them) on an AsyncPool")
    bench.add_argument("--uvloop", action="store_true", help="with --async: run on uvloop")
    bench.add_argument("--sweep", type=_sizes, metavar="SIZES",
                       help="run at each pool size (e.g. 1,2,4,8,16,32): throughput, latency "
                            "p50/p99 and utilization per size, and the knee")
    bench.add_argument("--plot", metavar="FILE.png",
                       help="with --sweep: draw throughput and latency per size as a PNG")
    bench.add_argument("--compare", action=argparse.BooleanOptionalAction, default=None,
                       help="after fastpool, run the same workload through each peer pool "
                            "installed that fits the URL (SQLAlchemy QueuePool, DBUtils "
                            "PooledDB, psycopg_pool; asyncpg's pool with --async) and print "
                            "one table (default: on, except with --sweep)")
    top = sub.add_parser(
        "top", help="live view of pools: gauges, rates, acquire waits, holders",
        description="Watch a process's pools through its debug endpoint (--endpoint), or "
                    "open a pool on --url, keep it busy like bench does and watch it.")
    source = top.add_mutually_exclusive_group()
    source.add_argument("--endpoint", help="debug endpoint of a running process, "
                                           "e.g. http://127.0.0.1:9187")
    source.add_argument("--url", help="database URL to open a pool on and drive "
                                      "(default: an SQLite file in a temp dir)")
    top.add_argument("--threads", type=_positive_int, help="worker threads without "
                                                           "--endpoint (8)")
    top.add_argument("--max-size", type=_pool_size, help="pool max_size without "
                                                            "--endpoint (4)")
    top.add_argument("--query", help="statement each cycle runs without --endpoint (SELECT 1)")
    top.add_argument("--interval", type=_positive_float, default=1.0,
                     help="seconds between refreshes (1)")
    top.add_argument("--iterations", type=_non_negative_int, default=0,
                     help="stop after N refreshes (0: until Ctrl-C)")
    top.add_argument("--once", action="store_true", help="print one frame to stdout and exit")
    top.add_argument("--pool", action="append", metavar="NAME",
                     help="show only this pool (repeatable; default: every pool)")
    load = sub.add_parser(
        "load", help="load a CSV file into a table (COPY / multi-row INSERT / executemany)",
        description="Load a CSV file (FILE '-': standard input) into a table in one "
                    "transaction: all rows or none. The first line names the columns unless "
                    "--no-header or --columns is given. Fields are loaded as strings, which "
                    "the server converts to the columns' types.")
    load.add_argument("file", metavar="FILE.csv", help="CSV file, or - for standard input")
    load.add_argument("--url", required=True, help="database URL")
    load.add_argument("--table", required=True, help="table to load into")
    load.add_argument("--schema", help="the table's schema (PostgreSQL), database (MySQL) or "
                                       "attached database (SQLite)")
    load.add_argument("--columns", type=_name_list, help="comma-separated columns the CSV "
                                                         "fields go to (default: the header)")
    load.add_argument("--on-conflict", type=_name_list, metavar="COLUMNS",
                      help="comma-separated key columns: update the rows whose key exists")
    load.add_argument("--delimiter", type=_delimiter, default=",",
                      help="field delimiter, one character (default ','; 'tab' or '\\t')")
    load.add_argument("--no-header", action="store_true",
                      help="the first line is data (needs --columns)")
    load.add_argument("--null", metavar="TEXT",
                      help="load fields equal to TEXT as NULL (--null '' for empty fields); "
                           "without it every field is a string, '' included")
    load.add_argument("--encoding", type=_encoding, default="utf-8",
                      help="the file's encoding (utf-8)")
    load.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                      help="progress bar on stderr (auto: when it is a terminal)")
    return parser


def _sizes(text: str) -> list[int]:
    from fastpool.cli.sweep import parse_sizes

    return parse_sizes(text)


def _name_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def _delimiter(text: str) -> str:
    if text in ("\\t", "tab", "TAB"):
        return "\t"
    if len(text) != 1 or text in ('"', "\r", "\n"):
        raise argparse.ArgumentTypeError(f"must be one character (not a quote or a line "
                                          f"break), got {text!r}")
    return text


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


class _Workload:
    """``threads`` workers doing acquire -> ``query`` -> release on ``pool``, all
    released together by ``start()`` and joined by ``stop()``."""

    def __init__(self, pool: Any, threads: int, query: str) -> None:
        self.stop_event = threading.Event()
        self.barrier = threading.Barrier(threads + 1)
        self.counts = [0] * threads
        self.gaps = [0.0] * threads
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=_worker, daemon=True,
                                         args=(pool, query, self.barrier, self.stop_event,
                                               self.counts, i, self.gaps, self.errors))
                        for i in range(threads)]

    def start(self) -> None:
        for t in self.threads:
            t.start()
        self.barrier.wait()

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join()

    # The rest of the I/O of _bench_steps.
    sleep = staticmethod(time.sleep)

    def ready(self, pool: Any) -> None:
        pool.wait(timeout=30.0)


class _TaskWorkload:
    """``_Workload`` for an ``AsyncPool``: ``tasks`` asyncio tasks, each cycle
    an ``await pool.fetch(query)`` (acquire -> query -> release, any driver)."""

    def __init__(self, pool: Any, tasks: int, query: str) -> None:
        self.pool = pool
        self.query = query
        self.stopping = False
        self.counts = [0] * tasks
        self.gaps = [0.0] * tasks
        self.errors: list[BaseException] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def _work(self, slot: int, go: asyncio.Event) -> None:
        fetch, query = self.pool.fetch, self.query
        n = 0
        await go.wait()  # every task begins together
        last = time.perf_counter()
        gap = 0.0
        try:
            while not self.stopping:
                await fetch(query)
                n += 1
                now = time.perf_counter()
                gap = max(gap, now - last)
                last = now
                if not n & 63:
                    self.counts[slot] = n
        except Exception as exc:
            self.errors.append(exc)
        self.counts[slot] = n
        self.gaps[slot] = gap

    async def start(self) -> None:
        go = asyncio.Event()
        self.tasks = [asyncio.ensure_future(self._work(i, go)) for i in range(len(self.counts))]
        await asyncio.sleep(0)  # each task is waiting on the event
        go.set()

    async def stop(self) -> None:
        self.stopping = True
        await asyncio.gather(*self.tasks)

    sleep = staticmethod(asyncio.sleep)

    async def ready(self, pool: Any) -> None:
        await pool.wait(timeout=30.0)


@contextlib.contextmanager
def _database_url(url: str | None, command: str) -> Iterator[str]:
    """``url``, or an SQLite file in a temporary directory removed afterwards."""
    if url is not None:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix=f"fastpool-{command}-") as tmp:
        yield f"sqlite:///{os.path.join(tmp, command + '.db')}"


def fairness(counts: Sequence[int]) -> float | None:
    """The bench's fairness: the most cycles one worker completed over the
    fewest (1.0 is even), None when a worker completed none."""
    return max(counts) / min(counts) if min(counts) else None


def _bench_steps(args: argparse.Namespace, pool: Any, work: Any) -> Steps[dict[str, Any]]:
    """One bench run, written once (``fastpool.steps``) for threads and tasks:
    ``work`` (a ``_Workload`` or ``_TaskWorkload``) is both the workload and
    the I/O (ready, start, sleep, stop)."""
    yield ("ready", pool)
    pool.stats(reset=True)
    counts, gaps, errors = work.counts, work.gaps, work.errors
    show = args.progress == "always" or (
        args.progress == "auto" and sys.stderr.isatty() and not args.json)
    yield ("start",)
    start = time.perf_counter()
    try:
        while (elapsed := time.perf_counter() - start) < args.duration and not errors:
            if show:
                _progress(sys.stderr, elapsed, args.duration, sum(counts))
            yield ("sleep", min(0.2, max(args.duration - elapsed, 0.0)))
    finally:
        yield ("stop",)
    elapsed = time.perf_counter() - start
    if show:
        _progress(sys.stderr, elapsed, args.duration, sum(counts))
        sys.stderr.write("\n")
    if errors:
        raise errors[0]
    stats = pool.stats()
    total = sum(counts)
    return {
        "url": pool.driver.describe(),
        "mode": "asyncio" if pool.is_async else "threads",
        "threads": args.threads,
        "max_size": args.max_size,
        "query": args.query,
        "duration": elapsed,
        "cycles": total,
        "throughput": total / elapsed,
        "fairness": fairness(counts),
        "per_thread_min": min(counts),
        "per_thread_max": max(counts),
        "longest_gap": max(gaps),
        "acquire_wait_p50": stats.acquire_wait_p50,
        "acquire_wait_p99": stats.acquire_wait_p99,
        "acquire_wait_max": stats.acquire_wait_max,
        "utilization": stats.utilization,
        "stats": stats.as_dict(),
    }


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    min_size = args.max_size if args.min_size is None else args.min_size
    with _database_url(args.url, "bench") as url, \
            create_pool(url, min_size=min_size, max_size=args.max_size, name="bench") as pool:
        work = _Workload(pool, args.threads, args.query)
        return run(_bench_steps(args, pool, work), work)


def run_bench_async(args: argparse.Namespace) -> dict[str, Any]:
    """``fastpool bench --async``: ``run_bench`` with tasks on an ``AsyncPool``."""

    async def bench() -> dict[str, Any]:
        min_size = args.max_size if args.min_size is None else args.min_size
        with _database_url(args.url, "bench") as url:
            async with create_async_pool(url, min_size=min_size, max_size=args.max_size,
                                         name="bench", wait=False) as pool:
                work = _TaskWorkload(pool, args.threads, args.query)
                return await run_async(_bench_steps(args, pool, work), work)

    if args.uvloop:
        import uvloop

        return uvloop.run(bench())
    return asyncio.run(bench())


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
        (f"{'tasks' if r['mode'] == 'asyncio' else 'threads'} / max_size",
         f"{r['threads']} / {r['max_size']}"),
        ("query", r["query"]),
        ("duration", f"{r['duration']:.2f} s"),
        ("cycles", f"{r['cycles']:,}"),
        ("throughput", f"{r['throughput']:,.0f} cycles/s"),
        (f"per-{'task' if r['mode'] == 'asyncio' else 'thread'} cycles min/max",
         f"{r['per_thread_min']:,} / {r['per_thread_max']:,}"),
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
    title = "fastpool bench --async" if r["mode"] == "asyncio" else "fastpool bench"
    return "\n".join([title, rule, *lines, rule])


def _only(snap: dict[str, Any], names: list[str] | None) -> dict[str, Any]:
    """``snap`` with just the named pools (all of them when ``names`` is None)."""
    if not names:
        return snap
    return {**snap, "pools": [p for p in snap["pools"] if p.get("name") in names]}


def run_top(args: argparse.Namespace) -> int:
    """``fastpool top``: watch an endpoint, or a pool of our own under the bench workload."""
    try:
        from fastpool.monitoring import top
    except ImportError as exc:  # rich is an optional dependency
        print(f"fastpool top: needs rich ({exc}): pip install 'fastpool[top]'", file=sys.stderr)
        return 2
    watch = {"interval": args.interval, "iterations": args.iterations, "once": args.once}
    try:
        if args.endpoint is not None:
            if (args.threads, args.max_size, args.query) != (None, None, None):
                print("fastpool top: --threads, --max-size and --query drive a workload of "
                      "its own: not with --endpoint", file=sys.stderr)
                return 2
            top.watch(lambda: _only(top.fetch_endpoint(args.endpoint), args.pool),
                      source=top.endpoint_url(args.endpoint), **watch)
            return 0
        with _database_url(args.url, "top") as url, \
                create_pool(url, max_size=args.max_size or 4, track_holders=True,
                            name="top") as pool:
            pool.wait(timeout=30.0)
            work = _Workload(pool, args.threads or 8, args.query or "SELECT 1")

            def fetch() -> dict[str, Any]:
                if work.errors:
                    raise work.errors[0]
                from fastpool.monitoring import snapshot

                return _only(snapshot(), args.pool)

            work.start()
            try:
                if args.once:
                    time.sleep(args.interval)  # one frame: show the workload under way
                top.watch(fetch, source=f"in-process: {pool.driver.describe()}, "
                                        f"{len(work.threads)} threads", **watch)
            finally:
                work.stop()
    except top.TopError as exc:
        print(f"fastpool top: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass  # Ctrl-C before the first frame: the pool is closed all the same
    return 0


class _CountingReader(io.RawIOBase):
    """A binary file that counts the bytes read through it (for the progress bar)."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = int(self.raw.readinto(buffer) or 0)
        self.count += n
        return n

    def close(self) -> None:
        if not self.closed:
            self.raw.close()  # the file it reads (never stdin: that is not closed)
        super().close()


class _LoadProgress:
    """Rows loaded, rows/s and (for a file) the share of it read, on stderr:
    a rich progress bar on a terminal when rich is installed, else one line
    rewritten in place."""

    def __init__(self, show: bool, table: str, source: _CountingReader, total: int | None
                 ) -> None:
        self.show = show
        self.source = source
        self.total = total
        self.start = time.perf_counter()
        self.last = 0.0
        self.rich: Any = None
        if show and sys.stderr.isatty():
            with contextlib.suppress(ImportError):
                from rich.console import Console
                from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

                self.rich = Progress(
                    TextColumn(f"loading {table}"), BarColumn(),
                    TextColumn("{task.fields[rows]:>12,} rows  {task.fields[rate]:>10,.0f} "
                               "rows/s"),
                    TimeElapsedColumn(), console=Console(stderr=True))
                self.task = self.rich.add_task("load", total=total, rows=0, rate=0.0)
                self.rich.start()

    def __call__(self, rows: int) -> None:
        now = time.perf_counter()
        if not self.show or (now - self.last < 0.1 and self.rich is None):
            return
        self.last = now
        rate = rows / max(now - self.start, 1e-9)
        if self.rich is not None:
            self.rich.update(self.task, completed=self.source.count, rows=rows, rate=rate)
            return
        share = f" {min(self.source.count / self.total, 1.0):6.1%}" if self.total else ""
        sys.stderr.write(f"\rloading:{share} {rows:>12,} rows {rate:>10,.0f} rows/s")
        sys.stderr.flush()

    def close(self, rows: int | None) -> None:
        if self.rich is not None:
            if rows is not None:
                self.rich.update(self.task, completed=self.total or self.source.count)
            self.rich.stop()
        elif self.show and self.last:
            if rows is not None:
                self.last = 0.0
                self(rows)
            sys.stderr.write("\n")
            sys.stderr.flush()


class _LineLog:
    """The CSV line numbers of the rows read lately, to name a bad row's line
    (the loader reads at most a chunk ahead of the row it checks)."""

    def __init__(self, keep: int) -> None:
        self.lines: collections.deque[int] = collections.deque(maxlen=keep)
        self.count = 0

    def add(self, line: int) -> None:
        self.lines.append(line)
        self.count += 1

    def line_of(self, index: int) -> int | None:
        back = self.count - 1 - index
        return self.lines[-1 - back] if 0 <= back < len(self.lines) else None


def run_load(args: argparse.Namespace) -> int:
    """``fastpool load``: the CSV file into the table; 0 on success, 1 on failure."""
    from fastpool.writes import bulk

    # Errors are reported once, below, not also by the pool's logger.
    logging.getLogger("fastpool").addHandler(logging.NullHandler())
    if args.no_header and args.columns is None:
        print("fastpool load: --no-header needs --columns", file=sys.stderr)
        return 2
    table: Any = args.table if args.schema is None else (args.schema, args.table)
    try:
        raw: Any = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
    except OSError as exc:
        print(f"fastpool load: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    st = os.fstat(raw.fileno())
    total = st.st_size if stat.S_ISREG(st.st_mode) and st.st_size else None
    counted = _CountingReader(raw)
    text = io.TextIOWrapper(io.BufferedReader(counted), encoding=args.encoding, newline="")
    reader = csv.reader(text, delimiter=args.delimiter)
    log = _LineLog(bulk.DEFAULT_CHUNK_ROWS + 1)
    null = args.null
    show = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    progress = _LoadProgress(show, args.table, counted, total)
    loaded = None

    def rows() -> Iterator[Any]:
        for row in reader:
            if not row:
                continue  # a blank line
            log.add(reader.line_num)
            yield row if null is None else [None if v == null else v for v in row]

    try:
        columns = args.columns
        if not args.no_header:
            header = next(reader, None)
            if header is None:
                print(f"fastpool load: {args.file}: empty file, no header line",
                      file=sys.stderr)
                return 1
            columns = columns or [name.strip() for name in header]
        start = time.perf_counter()
        with create_pool(args.url, min_size=1, max_size=1, name="load") as pool:
            pool.wait(timeout=30.0)
            loaded = bulk.copy_rows(pool, table, columns, rows(), on_conflict=args.on_conflict,
                                    pg_format="text", progress=progress)
        elapsed = time.perf_counter() - start
    except bulk.RowError as exc:
        line = log.line_of(exc.index)
        where = f" line {line}" if line is not None else ""
        print(f"fastpool load: {args.file}{where}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nfastpool load: interrupted; nothing was loaded", file=sys.stderr)
        return 130
    except Exception as exc:  # the driver's errors too: a message, never a traceback
        print(_one_line("load", exc), file=sys.stderr)
        return 1
    finally:
        progress.close(loaded)
        if args.file != "-":
            text.close()
    rate = loaded / elapsed if elapsed > 0 else 0.0
    print(f"loaded {loaded:,} rows into {args.table} in {elapsed:.2f} s ({rate:,.0f} rows/s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "load":
        return run_load(args)
    if args.command == "top":
        try:
            return run_top(args)
        except Exception as exc:  # the driver's errors too: a message, never a traceback
            print(_one_line("top", exc), file=sys.stderr)
            return 1
    args.threads_given = args.threads is not None
    if args.threads is None:
        args.threads = 8
    refusal = _bench_refusal(args)
    if refusal is not None:
        print(f"fastpool bench: {refusal}", file=sys.stderr)
        return 2
    bench = run_bench_async if args.use_async else run_bench
    try:
        if args.sweep is not None:  # fastpool.cli.sweep: a bench run per pool size
            from fastpool.cli import sweep

            result = sweep.run_sweep(args, bench)
            if args.plot is not None:
                sweep.plot(result, args.plot)
            table = sweep.format_sweep(result) + (f"\nplot: {args.plot}" if args.plot else "")
        else:
            result = bench(args)
            table = format_table(result)
            if args.compare is not False:  # fastpool.cli.compare: the peers, one table
                from fastpool.cli import compare

                rows = result["compare"] = compare.run_compare(args, result)
                if args.compare or any(r["status"] != "n/a" for r in rows[1:]):
                    table += "\n\n" + compare.format_compare(rows, result)
    except Exception as exc:  # the driver's errors too: a message, never a traceback
        print(_one_line("bench", exc), file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, sort_keys=True) if args.json else table)
    return 0


def _bench_refusal(args: argparse.Namespace) -> str | None:
    """Why ``fastpool bench``'s options do not go together, or None."""
    if args.uvloop and not args.use_async:
        return "--uvloop goes with --async"
    if args.compare and args.sweep is not None:
        return "--compare goes without --sweep"
    if args.plot is not None and args.sweep is None:
        return "--plot goes with --sweep"
    if args.sweep is not None and args.min_size is not None:
        return "--sweep opens every size's connections: no --min-size"
    if args.min_size is not None and not 0 <= args.min_size <= args.max_size:
        return (f"--min-size must be between 0 and --max-size ({args.max_size}), "
                f"got {args.min_size}")
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError as exc:
            return f"--plot needs matplotlib ({exc}): pip install 'fastpool[bench]'"
    return None

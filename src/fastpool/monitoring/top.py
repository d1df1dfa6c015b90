"""``fastpool top``: a live terminal view of pools, from ``snapshot()`` data.

``render(snap, previous)`` is a pure function from one snapshot (and the one
before it, for per-second rates) to a rich renderable: testable without a
terminal. ``watch(fetch, ...)`` is the refresh loop around it, and
``fetch_endpoint(url)`` reads the JSON of a process's debug endpoint (see
``fastpool.monitoring.serve``). Needs ``rich`` (``pip install 'fastpool[top]'``).
"""

from __future__ import annotations

import http.client
import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from fastpool.errors import FastpoolError

__all__ = ["TopError", "fetch_endpoint", "format_seconds", "render", "wait_buckets", "watch"]

Snapshot = Mapping[str, Any]

#: Rows in the holders table; the rest are summarized in one line.
MAX_HOLDERS = 10
#: Width of the gauge and histogram bars, in cells.
BAR_WIDTH = 18
#: Longer code locations keep their file name and lose leading directories.
MAX_SITE = 64


class TopError(FastpoolError):
    """The snapshot could not be read (endpoint unreachable, not fastpool JSON...)."""


# -- formatting ---------------------------------------------------------------


def _seconds(value: float | str) -> float:
    """A histogram bound: a number, or "+Inf" as the JSON endpoint says infinity."""
    return math.inf if value in ("+Inf", "Inf", "inf") else float(value)


def format_seconds(seconds: float) -> str:
    """``1.50 s``, ``65.5 ms``, ``12.3 us``, three significant digits or so."""
    if math.isinf(seconds):
        return "inf"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            value = seconds / scale
            return f"{value:.3g} {unit}" if value < 1000 else f"{value:.0f} {unit}"
    return "0" if seconds <= 0 else f"{seconds * 1e9:.0f} ns"


def _bar(value: float, total: float, width: int = BAR_WIDTH, style: str = "green") -> Text:
    filled = 0 if total <= 0 else round(min(max(value / total, 0.0), 1.0) * width)
    if value > 0 and filled == 0:
        filled = 1  # something is there: show it
    return Text.assemble(("█" * filled, style), ("░" * (width - filled), "grey35"))


def _site(site: str | None) -> str:
    """``file:line in function``, long paths shortened from the left."""
    if not site:
        return "-"
    if len(site) <= MAX_SITE:
        return site
    path, sep, rest = site.partition(":")
    parts = path.split("/")
    while len(parts) > 1 and len("…/" + "/".join(parts[1:]) + sep + rest) > MAX_SITE:
        parts.pop(0)
    return "…/" + "/".join(parts[1:] if len(parts) > 1 else parts) + sep + rest


# -- the pieces of one pool's panel ---------------------------------------------


def wait_buckets(hist: Mapping[str, Any]) -> list[tuple[str, int]]:
    """``(label, count)`` per bucket of a cumulative histogram, without the empty
    buckets before the first and after the last observation."""
    bounds = [_seconds(le) for le in hist["le"]]
    cumulative = list(hist["cumulative"])
    counts = [n - prev for n, prev in zip(cumulative, [0, *cumulative[:-1]], strict=True)]
    used = [i for i, n in enumerate(counts) if n > 0]
    if not used:
        return []
    rows = []
    for i in range(used[0], used[-1] + 1):
        if math.isinf(bounds[i]):
            label = f">= {format_seconds(bounds[i - 1])}" if i else "any"
        else:
            label = f"< {format_seconds(bounds[i])}"
        rows.append((label, counts[i]))
    return rows


def _gauges(stats: Mapping[str, Any]) -> Table:
    size = max(int(stats["max_size"]), 1)
    in_use_style = "green" if stats["in_use"] < size else "yellow"
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold")
    table.add_column()
    table.add_column(justify="right")
    table.add_row("open", _bar(stats["open"], size, style="cyan"),
                  f"{stats['open']}/{size}  min {stats['min_size']}")
    table.add_row("idle", _bar(stats["idle"], size, style="blue"), f"{stats['idle']}/{size}")
    table.add_row("in_use", _bar(stats["in_use"], size, style=in_use_style),
                  f"{stats['in_use']}/{size}")
    waiting = stats["waiting"]
    table.add_row("waiting", _bar(waiting, size, style="red"),
                  Text(str(waiting), style="bold red" if waiting else ""))
    table.add_row("utilization", _bar(stats["utilization"], 1.0, style="magenta"),
                  f"{stats['utilization']:.0%}")
    return table


def _counters(stats: Mapping[str, Any], before: Mapping[str, Any] | None,
              elapsed: float) -> Table:
    rows: list[tuple[str, int, int | None, bool]] = []  # label, now, before, alarming

    def add(label: str, key: str, alarming: bool = False) -> None:
        rows.append((label, stats[key], None if before is None else before[key], alarming))

    add("acquisitions", "acquisitions")
    add("waits", "waits")
    add("timeouts", "timeouts", alarming=True)
    add("rejected", "rejected", alarming=True)
    add("connect errors", "connect_errors", alarming=True)
    if "reclaimed" in stats:  # a process running an older fastpool has none
        add("reclaimed", "reclaimed", alarming=True)
    if "dirty_on_lend" in stats:
        add("dirty on lend", "dirty_on_lend", alarming=True)
    add("opened", "opened")
    closed = stats["closed"]
    reasons = [r for r, n in closed.items() if n]
    if not reasons:
        add("closed", "closed_total")
    for reason in reasons:
        was = None if before is None else before["closed"].get(reason, 0)
        rows.append((f"closed: {reason}", closed[reason], was, reason == "broken"))

    table = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold")
    table.add_column("counter")
    table.add_column("total", justify="right")
    table.add_column("per s", justify="right")
    for label, now, was, alarming in rows:
        if was is None or now < was or elapsed <= 0:
            rate = "-"  # first frame, or the stats were reset in between
        else:
            per_s = (now - was) / elapsed
            rate = f"{per_s:,.1f}" if per_s < 100 else f"{per_s:,.0f}"
        style = "bold red" if alarming and now else ""
        table.add_row(Text(label, style=style), f"{now:,}", rate)
    return table


def _waits(pool: Mapping[str, Any]) -> Group:
    stats = pool["stats"]
    hist = pool["acquire_wait"]
    summary = Table.grid(padding=(0, 2))
    for label, key, note in (("acquire wait", "acquire_wait", f"{hist['count']:,} acquires"),
                             ("hold", "hold", "")):
        summary.add_row(Text(label, style="bold"),
                        *(f"{q} {format_seconds(stats[f'{key}_{q}'])}"
                          for q in ("p50", "p99", "max")),
                        Text(note, style="dim"))
    buckets = wait_buckets(hist)
    if not buckets:
        return Group(summary, Text("  no acquisitions yet", style="dim"))
    top = max(n for _, n in buckets)
    table = Table.grid(padding=(0, 1))
    table.add_column(justify="right", style="dim")
    table.add_column()
    table.add_column(justify="right")
    for label, n in buckets:
        table.add_row(f"  {label}", _bar(n, top, style="yellow"), f"{n:,}")
    return Group(summary, table)


def _advice(pool: Mapping[str, Any]) -> RenderableType:
    """``advice  max_size 4 → 9: p99 wait 38 ms → 0.6 ms`` and why (pool.advice())."""
    advice = pool.get("advice")  # absent from an older fastpool's endpoint
    if not advice:
        return Text()
    change = advice["max_size"] != advice["current_max_size"]
    return Text.assemble(("advice  ", "bold"), (advice["summary"], "bold yellow" if change
                                                 else ""),
                         (f"  {advice['reason']}", "dim"))


def _holders(pool: Mapping[str, Any]) -> RenderableType:
    holders = sorted(pool["holders"], key=lambda h: -float(h["held"]))
    if not holders:
        return Text("no connections in use", style="dim")
    table = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold")
    table.add_column("held for", justify="right", no_wrap=True)
    table.add_column("acquired at", overflow="fold")
    table.add_column("connection", overflow="ellipsis", no_wrap=True, max_width=40)
    leak = pool["settings"].get("leak_threshold")
    for h in holders[:MAX_HOLDERS]:
        held = float(h["held"])
        style = "bold red" if leak is not None and held >= leak else ""
        table.add_row(Text(format_seconds(held), style=style), _site(h["acquired_at"]),
                      str(h["connection"]))
    parts: list[RenderableType] = [table]
    if len(holders) > MAX_HOLDERS:
        parts.append(Text(f"... and {len(holders) - MAX_HOLDERS} more", style="dim"))
    if not pool["settings"].get("track_holders"):
        parts.append(Text("(track_holders=False: call sites not recorded)", style="dim"))
    return Group(*parts)


def _pool_panel(pool: Mapping[str, Any], pid: object, before: Mapping[str, Any] | None,
                elapsed: float) -> Panel:
    stats = pool["stats"]
    title = Text.assemble((str(pool["name"]), "bold cyan"), "  ", str(pool["database"]),
                          ("  pid ", "dim"), str(pid))
    if pool.get("closed"):
        title.append("  closed", style="bold red")
    top = Table.grid(padding=(0, 3))
    top.add_row(_gauges(stats), _counters(stats, before, elapsed))
    body = Group(top, Text(), _waits(pool), _advice(pool), Text(), _holders(pool))
    return Panel(body, title=title, title_align="left", border_style="cyan")


# -- the whole frame ------------------------------------------------------------------------


def render(snap: Snapshot, previous: Snapshot | None = None, *, source: str = "",
           status: str | None = None) -> RenderableType:
    """One frame: a line about the process, then a panel per pool.

    ``previous`` (an earlier snapshot of the same process) gives the counters
    per-second rates; without it they show ``-``. ``status`` is a line shown
    in red under the header (such as a failed refresh).
    """
    pid = snap.get("pid", "?")
    pools: Sequence[Mapping[str, Any]] = snap.get("pools", [])
    stamp = time.strftime("%H:%M:%S", time.localtime(float(snap.get("time", time.time()))))
    header = Text.assemble(("fastpool top", "bold"), f"  pid {pid}", f"  {stamp}",
                           f"  {len(pools)} pool{'s' if len(pools) != 1 else ''}")
    if source:
        header.append(f"  {source}", style="dim")
    parts: list[RenderableType] = [header]
    if status:
        parts.append(Text(status, style="bold red"))

    before: dict[str, Mapping[str, Any]] = {}
    elapsed = 0.0
    if previous is not None and previous.get("pid") == pid:
        before = {p["name"]: p["stats"] for p in previous.get("pools", [])}
        elapsed = float(snap.get("time", 0.0)) - float(previous.get("time", 0.0))
    if not pools:
        parts.append(Text(f"no open pools in pid {pid}", style="dim"))
    for pool in pools:
        parts.append(_pool_panel(pool, pid, before.get(pool["name"]), elapsed))
    return Group(*parts)


# -- reading snapshots and the refresh loop -------------------------------------------------


def endpoint_url(endpoint: str) -> str:
    """``host:port``, ``http://host:port`` or the full ``.../debug/fastpool`` URL."""
    url = endpoint if "://" in endpoint else f"http://{endpoint}"
    url = url.rstrip("/")
    return url if url.endswith("/debug/fastpool") else f"{url}/debug/fastpool"


def fetch_endpoint(endpoint: str, timeout: float = 5.0) -> dict[str, Any]:
    """GET the endpoint's snapshot; any failure is a ``TopError`` with one clear line."""
    url = endpoint_url(endpoint)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise TopError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise TopError(f"cannot reach {url}: {exc.reason}") from None
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise TopError(f"cannot read {url}: {type(exc).__name__}: {exc}") from None
    try:
        snap = json.loads(body)
    except ValueError:
        raise TopError(f"{url} did not answer JSON: is it a fastpool debug endpoint?") from None
    if not isinstance(snap, dict) or not isinstance(snap.get("pools"), list):
        raise TopError(f"{url} answered JSON without a pools list: not a fastpool endpoint?")
    return snap


def watch(fetch: Callable[[], Snapshot], *, interval: float = 1.0, iterations: int = 0,
          once: bool = False, source: str = "", console: Console | None = None) -> None:
    """Show ``fetch()`` every ``interval`` seconds until ``iterations`` frames (0:
    until Ctrl-C, which returns normally). ``once`` prints one frame and returns.

    A ``TopError`` from the first fetch propagates; later ones show in the
    frame and the next refresh tries again.
    """
    console = console or Console()
    snap = fetch()
    if once:
        console.print(render(snap, source=source))
        return
    previous: Snapshot | None = None
    frames = 1
    try:
        with Live(render(snap, source=source), console=console, auto_refresh=False) as live:
            while not iterations or frames < iterations:
                time.sleep(interval)
                status = None
                try:
                    previous, snap = snap, fetch()
                except TopError as exc:
                    status = f"refresh failed: {exc}"
                    previous = None
                frames += 1
                live.update(render(snap, previous, source=source, status=status), refresh=True)
    except KeyboardInterrupt:
        pass

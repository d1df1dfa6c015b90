"""``fastpool top``: the frame rendered from real snapshots, the command against a
real debug endpoint, and one run in a real terminal (a pty)."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from rich.console import Console

import fastpool
from fastpool import monitoring
from fastpool.monitoring import top

ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07]*\x07|[()][A-Za-z0-9]|[=>78])")


def text_of(renderable, width=120):
    console = Console(record=True, width=width, force_terminal=False)
    console.print(renderable)
    return console.export_text()


def only_toptest(snap):
    """The snapshot lists every live pool of the process: keep this test's."""
    return {**snap, "pools": [p for p in snap["pools"] if p["name"] == "toptest"]}


@pytest.fixture
def held_pool():
    """A real pool with one connection held by this test, and the endpoint serving it."""
    pool = fastpool.create_pool("sqlite:///:memory:", track_holders=True, name="toptest",
                                max_size=3)
    conn = pool.acquire()
    server = monitoring.serve(port=0)
    try:
        yield pool, server
    finally:
        server.close()
        pool.release(conn)
        pool.close()


def test_renders_a_real_snapshot(held_pool):
    pool, _ = held_pool
    before = monitoring.snapshot()
    with pool.connection():
        pass
    snap = only_toptest(monitoring.snapshot())
    out = text_of(top.render(snap, only_toptest(before), source="test"))
    assert "toptest" in out and "sqlite :memory:" in out and f"pid {os.getpid()}" in out
    assert Path(__file__).name in out  # the holder's acquired_at: this file
    (line,) = [ln for ln in out.splitlines() if "in_use" in ln]
    assert "1/3" in line and "█" in line  # the gauge: 1 of max_size 3, with its bar
    assert re.search(r"open\s+\S+\s+[1-3]/3\s+min 1", out)
    assert "acquisitions" in out and "per s" in out and "acquire wait" in out


def test_wait_histogram_buckets_skip_empty_ends():
    hist = {"le": [1e-6, 2e-6, 4e-6, 8e-6, "+Inf"], "cumulative": [0, 3, 3, 7, 7],
            "count": 7, "sum": 0.0}
    assert top.wait_buckets(hist) == [("< 2 us", 3), ("< 4 us", 0), ("< 8 us", 4)]
    assert top.wait_buckets({**hist, "cumulative": [0] * 5, "count": 0}) == []
    assert top.wait_buckets({**hist, "cumulative": [0, 0, 0, 0, 2]}) == [(">= 8 us", 2)]


def test_rates_come_from_the_previous_frame_and_survive_a_reset(held_pool):
    snap = only_toptest(top.fetch_endpoint(held_pool[1].url))  # JSON as served ("+Inf")
    assert snap["pools"][0]["acquire_wait"]["le"][-1] == "+Inf"
    later = {**snap, "time": snap["time"] + 2.0,
             "pools": [{**p, "stats": {**p["stats"], "acquisitions": p["stats"]["acquisitions"]
                                       + 10}} for p in snap["pools"]]}

    def rate(frame):
        (line,) = [ln for ln in text_of(frame).splitlines() if "acquisitions" in ln]
        return line.split("acquisitions", 1)[1].split()[1]

    assert rate(top.render(later, snap)) == "5.0"  # 10 more in 2 s
    assert rate(top.render(snap, later)) == "-"  # counters went back: stats were reset
    assert rate(top.render(snap)) == "-"  # the first frame has no rates


def run_top(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "fastpool", "top", *args],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "120"})


def test_top_once_against_a_real_endpoint(held_pool):
    _, server = held_pool
    proc = run_top("--endpoint", server.url, "--once", "--pool", "toptest")
    assert proc.returncode == 0, proc.stderr
    assert "toptest" in proc.stdout
    (line,) = [ln for ln in proc.stdout.splitlines() if "in_use" in ln]
    assert "1/3" in line
    assert Path(__file__).name in proc.stdout


def test_a_bad_endpoint_is_one_line_and_exit_2(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = run_top("--endpoint", f"http://127.0.0.1:{port}", "--once")
    assert proc.returncode == 2
    assert proc.stderr.startswith("fastpool top: cannot reach http://127.0.0.1:")
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_top_rejects_workload_options_with_an_endpoint():
    proc = run_top("--endpoint", "http://127.0.0.1:9", "--threads", "2", "--once")
    assert proc.returncode == 2 and "not with --endpoint" in proc.stderr


def test_top_drives_its_own_pool_once(tmp_path):
    proc = run_top("--url", f"sqlite:///{tmp_path / 't.db'}", "--threads", "2",
                   "--max-size", "1", "--interval", "0.2", "--once")
    assert proc.returncode == 0, proc.stderr
    assert "in-process" in proc.stdout and "acquire wait" in proc.stdout
    assert re.search(r"acquisitions\s+[1-9]", proc.stdout)  # the workload ran


def read_pty(fd, proc, limit=60.0):
    """Everything the child writes to the terminal until it exits."""
    chunks = []
    deadline = time.monotonic() + limit  # only a guard against hanging forever
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError as exc:  # EIO: the child closed the terminal
                if exc.errno != errno.EIO:
                    raise
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    return b"".join(chunks).decode("utf-8", "replace")


def test_top_in_a_real_terminal(held_pool):
    _, server = held_pool
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 120, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "50"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "fastpool", "top", "--endpoint",
                             server.url, "--iterations", "2", "--interval", "0.5",
                             "--pool", "toptest"],
                            stdin=slave, stdout=slave, stderr=slave, env=env,
                            start_new_session=True)
    os.close(slave)
    try:
        raw = read_pty(master, proc)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    screen = ANSI.sub("", raw)
    assert code == 0, screen
    assert "\x1b[" in raw  # it drew on a terminal: colors and cursor moves
    assert "toptest" in screen and "in_use" in screen
    assert screen.count("toptest") >= 2  # a refresh redrew the frame
    assert "Traceback" not in screen

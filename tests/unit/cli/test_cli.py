"""The fastpool command."""

from __future__ import annotations

import json
import subprocess
import sys


def run(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "fastpool", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_bench_on_the_embedded_default_reports_json():
    proc = run("bench", "--duration", "0.5", "--threads", "4", "--max-size", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["cycles"] > 0 and out["throughput"] > 0
    assert out["threads"] == 4 and out["max_size"] == 2
    assert out["url"].startswith("sqlite ")
    assert out["stats"]["acquisitions"] == out["cycles"]
    assert out["stats"]["timeouts"] == 0
    assert out["per_thread_min"] > 0  # every thread completed cycles


def test_bench_prints_a_table_and_a_progress_bar(tmp_path):
    url = f"sqlite:///{tmp_path / 'b.db'}"
    proc = run("bench", "--url", url, "--duration", "0.5", "--threads", "2",
               "--progress", "always")
    assert proc.returncode == 0, proc.stderr
    assert "throughput" in proc.stdout and "acquire wait p99" in proc.stdout
    assert "cycles/s" in proc.stdout
    assert "[" in proc.stderr and "#" in proc.stderr  # the bar


def test_bench_rejects_bad_arguments():
    proc = run("bench", "--threads", "0")
    assert proc.returncode == 2
    assert "argument --threads: must be an integer >= 1" in proc.stderr
    proc = run("bench", "--url", "nosuch://x")
    assert proc.returncode == 1
    assert "unknown URL scheme 'nosuch'" in proc.stderr


def test_fastpool_console_script_is_installed():
    from importlib.metadata import entry_points

    (script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "fastpool"]
    assert script.value == "fastpool.cli:main"
    from fastpool.cli import main

    assert script.load() is main


def test_bench_async_on_the_embedded_default_prints_its_table():
    proc = run("bench", "--async", "--duration", "0.5", "--threads", "20", "--max-size", "4")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("fastpool bench --async")
    rows = dict(line.split(None, 1) if "  " not in line else
                [part.strip() for part in line.split("  ", 1)]
                for line in proc.stdout.splitlines()[2:-1])
    assert rows["tasks / max_size"] == "20 / 4"
    assert rows["database"].startswith("sqlite ")
    assert rows["throughput"].endswith("cycles/s")
    assert rows["pool timeouts"] == "0" and "acquire wait p99" in rows


def test_bench_async_json_counts_every_task(tmp_path):
    url = f"sqlite:///{tmp_path / 'b.db'}"
    proc = run("bench", "--async", "--url", url, "--duration", "0.5", "--threads", "8",
               "--max-size", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["mode"] == "asyncio" and out["threads"] == 8 and out["max_size"] == 2
    assert out["cycles"] > 0 and out["stats"]["acquisitions"] == out["cycles"]
    assert out["per_thread_min"] > 0  # every task completed cycles (FIFO hand-off)
    assert out["stats"]["timeouts"] == 0


def test_bench_uvloop_needs_async():
    proc = run("bench", "--uvloop")
    assert proc.returncode == 2
    assert "--uvloop goes with --async" in proc.stderr

"""``fastpool bench --compare`` (issue 13): the bench workload through the peer
pools installed, one table and the same rows in the JSON. No timing asserts:
only that each pool ran, was measured and has a ratio to fastpool."""

from __future__ import annotations

import json
import sys

import pytest

from fastpool.cli import main
from fastpool.cli.compare import format_compare, wait_stats
from tests.fix_db import need_driver

SHORT = ["--duration", "0.3", "--threads", "4", "--max-size", "2", "--progress", "never"]


def table_rows(out: str) -> dict[str, str]:
    """The comparison table's lines by pool name (the part after the blank line)."""
    table = out.split("\n\n", 1)[1]
    assert table.startswith("fastpool bench --compare: ")
    return {name: line for line in table.splitlines()
            for name in ("fastpool", "SQLAlchemy QueuePool", "DBUtils PooledDB",
                         "psycopg_pool ConnectionPool", "asyncpg pool",
                         "psycopg_pool AsyncConnectionPool") if line.startswith(name + " ")}


def bench_json(capsys, *args: str) -> dict:
    assert main(["bench", *args, *SHORT, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def measured(rows: list[dict], name: str) -> dict:
    (row,) = [r for r in rows if r["pool"] == name]
    assert row["status"] == "ok", row
    assert row["cycles"] > 0 and row["throughput"] > 0
    assert 0 <= row["acquire_wait_p50"] <= row["acquire_wait_p99"]
    assert row["ratio"] > 0
    return row


def test_compare_on_sqlite_lists_queuepool_and_pooleddb_with_numbers_and_a_ratio(capsys):
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("dbutils")
    assert main(["bench", "--compare", *SHORT]) == 0
    out = capsys.readouterr().out
    assert out.startswith("fastpool bench\n")  # fastpool's own table first
    rows = table_rows(out)
    assert rows["fastpool"].split()[-1] == "1.00x"
    for name in ("SQLAlchemy QueuePool", "DBUtils PooledDB"):
        cells = rows[name][len(name):].split()
        assert len(cells) == 5, rows[name]  # cycles/s, wait p50, wait p99, fairness, ratio
        assert int(cells[0].replace(",", "")) > 0
        float(cells[1]), float(cells[2])
        assert cells[3] == "inf" or float(cells[3]) >= 1.0
        assert cells[4].endswith("x") and float(cells[4][:-1]) > 0
    assert "n/a for this URL" in rows["psycopg_pool ConnectionPool"]


def test_compare_is_the_default_and_no_compare_turns_it_off(capsys):
    pytest.importorskip("sqlalchemy")
    assert main(["bench", *SHORT]) == 0
    assert "fastpool bench --compare: " in capsys.readouterr().out
    assert main(["bench", "--no-compare", *SHORT]) == 0
    assert "--compare" not in capsys.readouterr().out
    assert "compare" not in bench_json(capsys, "--no-compare")


def test_json_has_the_same_entries_as_the_table(capsys):
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("dbutils")
    out = bench_json(capsys, "--compare")
    rows = out["compare"]
    assert [r["pool"] for r in rows] == ["fastpool", "SQLAlchemy QueuePool", "DBUtils PooledDB",
                                         "psycopg_pool ConnectionPool"]
    assert measured(rows, "fastpool")["ratio"] == 1.0
    assert rows[0]["throughput"] == out["throughput"]  # fastpool's row is its run
    measured(rows, "SQLAlchemy QueuePool")
    measured(rows, "DBUtils PooledDB")
    assert rows[3]["status"] == "n/a"
    # The table printed from these rows names the same pools.
    printed = table_rows("\n\n" + format_compare(rows, out))
    assert set(printed) == {r["pool"] for r in rows}


@pytest.mark.parametrize(("module", "name", "pip"), [
    ("dbutils.pooled_db", "DBUtils PooledDB", "DBUtils"),
    ("sqlalchemy.pool", "SQLAlchemy QueuePool", "SQLAlchemy"),
])
def test_a_peer_not_importable_is_listed_not_installed_with_its_pip_name(
        capsys, monkeypatch, module, name, pip):
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    rows = {r["pool"]: r for r in bench_json(capsys, "--compare")["compare"]}
    assert rows[name]["status"] == "not installed"
    assert rows[name]["install"] == f"pip install {pip}"
    assert main(["bench", "--compare", *SHORT]) == 0
    line = table_rows(capsys.readouterr().out)[name]
    assert f"not installed (pip install {pip})" in line


def test_compare_on_postgresql_runs_psycopg_pool(capsys, pg_url):
    need_driver("psycopg_pool", "bench")
    rows = bench_json(capsys, "--url", pg_url, "--compare")["compare"]
    measured(rows, "psycopg_pool ConnectionPool")
    assert main(["bench", "--url", pg_url, "--compare", *SHORT]) == 0
    assert "psycopg_pool ConnectionPool" in table_rows(capsys.readouterr().out)


def test_compare_async_on_postgresql_runs_asyncpg_s_pool(capsys, pg_url):
    need_driver("asyncpg", "asyncpg")
    need_driver("psycopg_pool", "bench")
    out = bench_json(capsys, "--async", "--url", pg_url, "--compare")
    assert out["mode"] == "asyncio"
    rows = out["compare"]
    assert [r["pool"] for r in rows] == ["fastpool", "asyncpg pool",
                                         "psycopg_pool AsyncConnectionPool"]
    measured(rows, "asyncpg pool")
    measured(rows, "psycopg_pool AsyncConnectionPool")


def test_async_on_sqlite_has_no_peer_to_compare(capsys):
    out = bench_json(capsys, "--async")
    assert {r["status"] for r in out["compare"][1:]} == {"n/a"}
    assert main(["bench", "--async", *SHORT]) == 0  # no table when nothing fits
    assert "--compare" not in capsys.readouterr().out


def test_wait_stats_use_fastpool_s_estimator():
    s = wait_stats([0.001] * 99 + [0.1])
    assert 0.0005 <= s.acquire_wait_p50 <= 0.0011
    assert s.acquire_wait_max == pytest.approx(0.1)
    assert s.acquisitions == 100
    assert wait_stats([]).acquire_wait_p99 == 0

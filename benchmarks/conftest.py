"""Shared set-up for the benchmarks: database DSNs and the peers' pools.

Benchmarks are not tests: they live outside the default test paths and
assert nothing about time. Run: python3 -m pytest benchmarks
"""

from __future__ import annotations

import os

import pytest

PG_DSN = os.environ.get("FASTPOOL_PG_DSN", "host=127.0.0.1 port=5432 dbname=test user=postgres")


def pytest_collection_modifyitems(config, items):
    # Group each scenario's contenders together in one run.
    items.sort(key=lambda item: item.nodeid)


@pytest.fixture(scope="session")
def pg_dsn():
    psycopg = pytest.importorskip("psycopg")
    try:
        psycopg.connect(PG_DSN, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_DSN!r}: {exc}")
    return PG_DSN

"""Parameters that are no sequence or mapping (``pool.fetch(sql, 5)``) get
the batcher's TypeError, "params must be a sequence or a mapping", from every
helper on every server, sync and asyncio, before anything is sent: no
connection is even taken (issue 20, group 4). Before, each driver raised its
own error (psycopg: "object of type 'int' has no len()")."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fastpool.drivers import from_url
from tests.fix_db import MYSQL_URL, PG_URL, need_driver

MESSAGE = "params must be a sequence or a mapping of parameters"
BAD = [5, "abc", b"abc", 2.5, object(), {1, 2}]


def _helpers(ph: str) -> list[tuple[str, Callable[[Any, Any], Any]]]:
    q = f"SELECT 1 WHERE 1 = {ph}"
    return [
        ("execute", lambda p, bad: p.execute(q, bad)),
        ("fetch", lambda p, bad: p.fetch(q, bad)),
        ("fetch cached", lambda p, bad: p.fetch(q, bad, cache_ttl=5)),
        ("fetchrow", lambda p, bad: p.fetchrow(q, bad)),
        ("fetchval", lambda p, bad: p.fetchval(q, bad)),
        ("executemany", lambda p, bad: p.executemany(q, bad)),
        ("executemany item", lambda p, bad: p.executemany(q, [(1,), bad])),
        ("explain", lambda p, bad: p.explain(q, bad)),
    ]


@pytest.fixture(params=["postgresql", "mysql", "sqlite"])
def sync_pool(request: pytest.FixtureRequest, make_pool: Any, tmp_path: Path) -> tuple[Any, str]:
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
    elif request.param == "mysql":
        url = request.getfixturevalue("mysql_url")
    else:
        url = f"sqlite:///{tmp_path / 'p.db'}"
    return make_pool(driver=from_url(url), max_size=1, min_size=0), \
        "?" if request.param == "sqlite" else "%s"


@pytest.mark.parametrize("bad", BAD, ids=[type(b).__name__ for b in BAD])
def test_every_helper_refuses_bad_params_before_sending_anything(sync_pool, bad):
    pool, ph = sync_pool
    for name, call in _helpers(ph):
        # A set is an iterable: its items (ints) are the bad parameter sets.
        expected = "params_seq must be an iterable of parameter sets" \
            if name == "executemany" and not isinstance(bad, set) else MESSAGE
        with pytest.raises(TypeError, match=expected):
            call(pool, bad)
        assert pool.stats().acquisitions == 0, name


def test_inside_a_transaction_the_same_check_and_the_transaction_goes_on(sync_pool):
    pool, ph = sync_pool
    with pool.connection() as conn:
        for _name, call in (("execute", lambda c: pool.execute(f"SELECT {ph}", 5, conn=c)),
                           ("fetch", lambda c: pool.fetch(f"SELECT {ph}", 5, conn=c)),
                           ("fetchval", lambda c: pool.fetchval(f"SELECT {ph}", 5, conn=c))):
            with pytest.raises(TypeError, match=MESSAGE):
                call(conn)
        # Nothing was sent: the connection is usable, no failed statement in it.
        assert pool.fetchval(f"SELECT {ph}", (7,), conn=conn) in (7, "7")

    def body(c: Any) -> Any:
        with pytest.raises(TypeError, match=MESSAGE):
            pool.fetchrow(f"SELECT {ph}", 5, conn=c)
        return pool.fetchval(f"SELECT {ph}", (8,), conn=c)

    assert pool.transaction(body) in (8, "8")


def test_good_params_of_every_kind_pass(sync_pool):
    pool, ph = sync_pool
    assert pool.fetchval(f"SELECT {ph}", (1,)) in (1, "1")
    assert pool.fetchval(f"SELECT {ph}", [1]) in (1, "1")
    assert pool.fetchval("SELECT 1") in (1, "1")
    assert pool.fetchval("SELECT 1", None) in (1, "1")


ASYNC = {"psycopg": ("postgresql", "postgres", "%s"), "asyncpg": ("postgresql", "asyncpg", "$1"),
         "asyncmy": ("mysql", "asyncmy", "%s"), "aiomysql": ("mysql", "aiomysql", "%s"),
         "aiosqlite": ("sqlite", "aiosqlite", "?")}


@pytest.mark.parametrize("client", list(ASYNC))
def test_asyncio_helpers_refuse_bad_params_before_sending_anything(request, client, run_pools,
                                                                   tmp_path):
    server, extra, ph = ASYNC[client]
    need_driver(client, extra)
    if server == "postgresql":
        request.getfixturevalue("pg_url")
        url = PG_URL.replace("postgresql://", f"postgresql+{client}://", 1)
    elif server == "mysql":
        request.getfixturevalue("mysql_url")
        url = MYSQL_URL.replace("mysql://", f"mysql+{client}://", 1)
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'a.db'}"

    async def body(make: Any) -> None:
        pool = await make(url=url, max_size=1, min_size=0)
        for name, call in _helpers(ph):
            with pytest.raises(TypeError, match=MESSAGE if name != "executemany"
                               else "params_seq must be an iterable of parameter sets"):
                await call(pool, 5)
            assert pool.stats().acquisitions == 0, name
        async with pool.connection() as conn:
            with pytest.raises(TypeError, match=MESSAGE):
                await pool.fetch(f"SELECT {ph}", 5, conn=conn)

    run_pools(body)


def test_the_batcher_and_the_helpers_share_one_check():
    from fastpool.options import parameters
    from fastpool.writes.batch import engine

    with pytest.raises(TypeError, match=MESSAGE + ", got int"):
        engine.make_item("INSERT INTO t VALUES (?)", 5, None, None)
    with pytest.raises(TypeError, match=MESSAGE + ", got int"):
        parameters(5)
    assert parameters(None) is None

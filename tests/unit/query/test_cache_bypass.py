"""``cache_ttl=`` with ``conn=``: the result cache is skipped inside the
caller's transaction (it may have written what the cache holds), and
``query_stats()["results"]["bypassed"]`` counts it, so a cache that is never
hit says why (issue 20, group 5)."""

from __future__ import annotations

import pytest

from fastpool import ConfigError


def results(pool):
    return pool.query_stats()["results"]


def test_cache_ttl_with_conn_skips_the_cache_and_counts_it(make_pool):
    pool = make_pool(max_size=2)
    pool.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER)")
    pool.execute("INSERT INTO t VALUES (1, 10)")
    assert pool.fetchval("SELECT n FROM t WHERE id = 1", cache_ttl=60) == 10  # a miss, stored
    with pool.connection() as conn:
        pool.execute("UPDATE t SET n = 11 WHERE id = 1", conn=conn)
        # The caller's own uncommitted write, not the cached 10.
        assert pool.fetchval("SELECT n FROM t WHERE id = 1", cache_ttl=60, conn=conn) == 11
        assert pool.fetch("SELECT n FROM t", cache_ttl=60, conn=conn) == [(11,)]
        conn.rollback()
    s = results(pool)
    assert (s["hits"], s["misses"], s["bypassed"]) == (0, 1, 2)

    def body(conn):
        return pool.fetchrow("SELECT n FROM t WHERE id = 1", cache_ttl=60, conn=conn)

    assert tuple(pool.transaction(body)) == (10,)
    assert results(pool)["bypassed"] == 3
    # The write in the block dropped t's cached results (rolled back or not):
    # a miss that stores, then a hit; the bypassed calls stored nothing.
    assert pool.fetchval("SELECT n FROM t WHERE id = 1", cache_ttl=60) == 10
    assert pool.fetchval("SELECT n FROM t WHERE id = 1", cache_ttl=60) == 10
    s = results(pool)
    assert (s["hits"], s["misses"], s["bypassed"]) == (1, 2, 3)


def test_a_bad_cache_ttl_with_conn_is_still_refused(make_pool):
    pool = make_pool(max_size=1)
    with pool.connection() as conn, pytest.raises(ConfigError, match="cache_ttl"):
        pool.fetchval("SELECT 1", cache_ttl=-1, conn=conn)
    assert results(pool)["bypassed"] == 0


def test_asyncio_pools_count_it_too(run_pools):
    async def body(make):
        pool = await make(max_size=1)
        async with pool.connection() as conn:
            assert await pool.fetchval("SELECT 1", cache_ttl=60, conn=conn) == 1
        assert pool.query_stats()["results"]["bypassed"] == 1

    run_pools(body)

"""Fork safety with a real os.fork()."""

from __future__ import annotations

import os

import pytest

from tests.fix_pool import run_in_child

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_child_never_uses_the_parents_connections(make_pool):
    pool = make_pool(min_size=2, max_size=2)
    pool.wait(5)
    with pool.connection() as conn:
        conn.execute("CREATE TABLE t (who TEXT)")
    held = pool.acquire()
    parent_ids = {id(held)}
    idle = pool.acquire()
    parent_ids.add(id(idle))
    pool.release(idle)

    def child():
        # The parent's 2 connections were written off at the fork (the new
        # worker may already have opened fresh ones for min_size).
        inherited = {"fork_closed": pool.stats().closed["fork"]}
        with pool.connection(timeout=5) as conn:
            fresh = id(conn) not in parent_ids
            conn.execute("INSERT INTO t VALUES ('child')")
        # Releasing a connection the parent lent before the fork is tolerated
        # and leaves it alone: it is the parent's to use and close.
        pool.release(held)
        pool.close()
        return {**inherited, "fresh": fresh}

    out = run_in_child(child)
    assert out == {"fork_closed": 2, "fresh": True}
    # The parent's connections still work: the child closed none of them.
    held.execute("INSERT INTO t VALUES ('parent')")
    held.commit()
    pool.release(held)
    with pool.connection() as conn:
        rows = sorted(r[0] for r in conn.execute("SELECT who FROM t"))
    assert rows == ["child", "parent"]
    assert pool.stats().closed["fork"] == 0

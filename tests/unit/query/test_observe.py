"""Statement shapes, N+1 guards and the slow-query log (fastpool.query.observe).

The guards are driven the way the query helpers drive them: a statement runs
on a real SQLite pool, then ``observer.observe(sql, nparams, elapsed_ns)`` is
called with its measured duration.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
import warnings
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastpool import ConfigError, FastpoolError
from fastpool.query.observe import (
    NPlusOneDetected,
    NPlusOneGuard,
    NPlusOneWarning,
    QueryObserver,
    ShapeCount,
    n_plus_one_guard,
    normalize,
)
from fastpool.sqltext import lexer as lexer_module

# ---- normalize ---------------------------------------------------------------------

SHAPES = [
    # literals of every kind become ?
    ("SELECT * FROM t WHERE a = 'x'", "SELECT * FROM t WHERE a = ?"),
    ("SELECT * FROM t WHERE a = 'it''s' AND b = 2", "SELECT * FROM t WHERE a = ? AND b = ?"),
    (r"SELECT * FROM t WHERE a = 'it\'s' AND b = 2", "SELECT * FROM t WHERE a = ? AND b = ?"),
    (r"SELECT E'a\'b\\', 1", "SELECT ?, ?"),
    ("SELECT $$it's $1 -- not a comment$$, 2", "SELECT ?, ?"),
    ("SELECT $fn$ body $$ inner $$ $fn$ FROM t", "SELECT ? FROM t"),
    ("SELECT B'0101', X'ff', N'näme', U&'d\\0061t', _utf8mb4'x' COLLATE utf8mb4_bin",
     "SELECT ?, ?, ?, ?, ? COLLATE utf8mb4_bin"),
    ("SELECT 1, 1.5, .5, 1e10, 2.5E-3, 0x1F, 1_000_000", "SELECT ?, ?, ?, ?, ?, ?, ?"),
    ("SELECT 'a' 'b'", "SELECT ? ?"),
    ("SELECT ''", "SELECT ?"),
    ("SELECT 'unterminated", "SELECT ?"),
    # placeholders of every paramstyle become ?
    ("SELECT * FROM t WHERE a = %s AND b = %(name)s AND c = %b",
     "SELECT * FROM t WHERE a = ? AND b = ? AND c = ?"),
    ("SELECT * FROM t WHERE a = ? AND b = ?2 AND c = :name AND d = $1 AND e = $e",
     "SELECT * FROM t WHERE a = ? AND b = ? AND c = ? AND d = ? AND e = ?"),
    # signs: part of a number after an operator or keyword, arithmetic after a value
    ("SELECT * FROM t WHERE a = -1 AND b BETWEEN -5 AND +5", "SELECT * FROM t WHERE a = ? AND "
     "b BETWEEN ? AND ?"),
    ("SELECT a - 1, a-1, (a) - 1, f(-1), x * -2 FROM t", "SELECT a - ?, a-?, (a) - ?, f(?), "
     "x * ? FROM t"),
    ("SELECT -1", "SELECT ?"),
    # what is not a value stays as written
    ("SELECT a::int, b::text[], '5'::int FROM t1 JOIN t2 USING (id)",
     "SELECT a::int, b::text[], ?::int FROM t1 JOIN t2 USING (id)"),
    ('SELECT "Weird ""name"" 1", `back``tick`, col$1, t1.c2 FROM "T"',
     'SELECT "Weird ""name"" 1", `back``tick`, col$1, t1.c2 FROM "T"'),
    ("SELECT a %% b, a % 2 FROM t", "SELECT a %% b, a % ? FROM t"),
    ("SELECT data->>'key', data #> '{a,b}' FROM t WHERE tags @> ARRAY['x']",
     "SELECT data->>?, data #> ? FROM t WHERE tags @> ARRAY[...]"),
    # comments go, whitespace collapses, case is kept
    ("select *\n  from\tt  -- why\n where a = 1 /* hint */", "select * from t where a = ?"),
    ("SELECT /* outer /* nested */ still comment */ 1", "SELECT ?"),
    ("SELECT /* MySQL /* does not nest */ 1", "SELECT ?"),
    ("SELECT a/**/FROM t", "SELECT a FROM t"),
    ("/*+ MAX_EXECUTION_TIME(1000) */ SELECT 1 /* unterminated", "SELECT ?"),
    ("SeLeCt 1 FrOm T;", "SeLeCt ? FrOm T"),
    ("  SELECT 1 ;  ; ", "SELECT ?"),
    # lists collapse: IN, ARRAY, multi-row VALUES, row-value IN
    ("SELECT * FROM t WHERE id IN (1, 2, 3)", "SELECT * FROM t WHERE id IN (...)"),
    ("SELECT * FROM t WHERE id IN (%s)", "SELECT * FROM t WHERE id IN (...)"),
    ("SELECT * FROM t WHERE id not in ('a','b')", "SELECT * FROM t WHERE id not in (...)"),
    ("SELECT * FROM t WHERE id IN (SELECT id FROM u WHERE x = 1)",
     "SELECT * FROM t WHERE id IN (SELECT id FROM u WHERE x = ?)"),
    ("SELECT * FROM t WHERE id IN (a, 1)", "SELECT * FROM t WHERE id IN (a, ?)"),
    ("SELECT * FROM t WHERE (a, b) IN ((1, 2), (3, 4), (5, 6))",
     "SELECT * FROM t WHERE (a, b) IN ((?, ?), ...)"),
    ("SELECT ARRAY[1, 2, 3]", "SELECT ARRAY[...]"),
    ("INSERT INTO t (a, b) VALUES (1, 'x')", "INSERT INTO t (a, b) VALUES (?, ?)"),
    ("INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y'),(3,'z') ON CONFLICT DO NOTHING",
     "INSERT INTO t (a, b) VALUES (?, ?), ... ON CONFLICT DO NOTHING"),
    ("INSERT INTO t VALUES (%s, %s), (%s, %s) RETURNING id",
     "INSERT INTO t VALUES (?, ?), ... RETURNING id"),
    ("INSERT INTO t VALUES (1, now()), (2, DEFAULT)", "INSERT INTO t VALUES (?, now()), "
     "(?, DEFAULT)"),
    ("SELECT f(1, 2), g(%s, %s, %s)", "SELECT f(?, ?), g(?, ?, ?)"),
    ("", ""),
    ("-- only a comment", ""),
]


@pytest.mark.parametrize(("sql", "shape"), SHAPES)
def test_normalize_gives_the_statement_shape(sql, shape):
    assert normalize(sql) == shape


def test_in_lists_and_value_rows_of_any_length_have_one_shape():
    shapes = {normalize(f"SELECT * FROM t WHERE id IN ({', '.join(['%s'] * n)})")
              for n in range(1, 50)}
    assert shapes == {"SELECT * FROM t WHERE id IN (...)"}
    rows = {normalize("INSERT INTO t VALUES " + ", ".join(["(%s, %s)"] * n)) for n in range(2, 50)}
    assert rows == {"INSERT INTO t VALUES (?, ?), ..."}


def _mysql_literal(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "''") + "'"


@given(st.text(), st.integers(), st.floats(allow_nan=False, allow_infinity=False))
def test_statements_differing_only_in_values_share_a_shape(text, number, real):
    sql = (f"SELECT * FROM t WHERE a = {_mysql_literal(text)} AND b = {number} "
           f"AND c > {real!r} -- {text.splitlines()[0] if text.splitlines() else ''}\n")
    assert normalize(sql) == "SELECT * FROM t WHERE a = ? AND b = ? AND c > ?"


def test_normalize_is_cached_by_text_and_long_text_bypasses_the_cache():
    sql = "SELECT * FROM fp_obs_cache_probe WHERE id = %s"
    before = lexer_module._cached_shape.cache_info()
    assert normalize(sql) == normalize(sql) == "SELECT * FROM fp_obs_cache_probe WHERE id = ?"
    after = lexer_module._cached_shape.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 1)
    assert after.maxsize == lexer_module.CACHE_SIZE
    long_sql = "SELECT " + ", ".join(f"'{i}'" for i in range(3000)) + " FROM t"
    assert len(long_sql) > lexer_module.CACHE_MAX_CHARS
    assert normalize(long_sql) == "SELECT " + ", ".join(["?"] * 3000) + " FROM t"
    assert lexer_module._cached_shape.cache_info().currsize == after.currsize


def test_normalize_rejects_what_is_not_sql_text():
    with pytest.raises(TypeError, match="str, got bytes"):
        normalize(b"SELECT 1")  # type: ignore[arg-type]


# ---- helpers: a real pool, observed like the query helpers will ---------------------

def run(pool: Any, observer: QueryObserver, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """Run ``sql`` on ``pool`` and report it to ``observer``, as pool.fetch() does."""
    start = time.perf_counter_ns()
    with pool.connection() as conn:
        rows = conn.execute(sql, params).fetchall()
    observer.observe(sql, len(params), time.perf_counter_ns() - start)  # the reported line
    return rows


REPORTED_LINE = run.__code__.co_firstlineno + 5  # the observer.observe(...) line in run()
SITE = f"{__file__}:{REPORTED_LINE} in run"


@pytest.fixture
def orders(make_pool):
    """A pool with an orders table (20 rows) and its observer."""
    pool = make_pool(max_size=2)
    with pool.connection() as conn:
        conn.execute("CREATE TABLE fp_obs_orders (id INTEGER PRIMARY KEY, customer INTEGER)")
        conn.executemany("INSERT INTO fp_obs_orders VALUES (?, ?)",
                         [(i, i % 4) for i in range(20)])
    return pool, QueryObserver(pool.name, slow_query_ms=None)


LOOKUP = "SELECT * FROM fp_obs_orders WHERE id = ?"
LOOKUP_SHAPE = "SELECT * FROM fp_obs_orders WHERE id = ?"


# ---- n_plus_one_guard ----------------------------------------------------------------

def test_warn_reports_a_shape_once_with_its_count_and_call_site(orders):
    pool, observer = orders
    with pytest.warns(NPlusOneWarning) as record, \
            observer.n_plus_one_guard(threshold=3) as guard:
        for i in range(3):
            run(pool, observer, LOOKUP, (i,))
        assert not record  # threshold executions are fine
        run(pool, observer, LOOKUP, (3,))
        assert len(record) == 1
        for i in range(4, 9):  # once per shape per scope
            run(pool, observer, LOOKUP, (i,))
    assert len(record) == 1
    warning = record[0]
    assert (warning.filename, warning.lineno) == (__file__, REPORTED_LINE)
    found = warning.message
    assert isinstance(found, NPlusOneWarning)
    assert (found.shape, found.count, found.threshold, found.site, found.pool) == (
        LOOKUP_SHAPE, 4, 3, SITE, pool.name)
    assert "4 times" in str(found) and LOOKUP_SHAPE in str(found) and SITE in str(found)
    assert guard.counts == {LOOKUP_SHAPE: 9}
    assert guard.report() == [ShapeCount(LOOKUP_SHAPE, 9, SITE)]


def test_raise_fails_the_statement_that_crossed_the_threshold_after_it_ran(orders):
    pool, observer = orders
    insert = "INSERT INTO fp_obs_orders (customer) VALUES (?) RETURNING id"
    with observer.n_plus_one_guard(threshold=2, action="raise"):
        run(pool, observer, insert, (100,))
        run(pool, observer, insert, (101,))
        with pytest.raises(NPlusOneDetected) as info:
            run(pool, observer, insert, (102,))
    assert isinstance(info.value, FastpoolError)
    assert (info.value.shape, info.value.count, info.value.site) == (
        "INSERT INTO fp_obs_orders (customer) VALUES (?) RETURNING id", 3, SITE)
    rows = run(pool, observer, "SELECT customer FROM fp_obs_orders WHERE customer >= 100")
    assert sorted(r[0] for r in rows) == [100, 101, 102]  # the third insert was committed


def test_log_writes_a_warning_on_the_nplusone_logger(orders, caplog):
    pool, observer = orders
    caplog.set_level(logging.WARNING, logger="fastpool.nplusone")
    with observer.n_plus_one_guard(threshold=5, action="log") as guard:
        for i in range(12):
            run(pool, observer, LOOKUP, (i,))
    records = [r for r in caplog.records if r.name == "fastpool.nplusone"]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    message = records[0].getMessage()
    assert LOOKUP_SHAPE in message and "6 times" in message and SITE in message
    assert records[0].fastpool_sql == LOOKUP_SHAPE  # structured fields for log pipelines
    assert guard.report() == [ShapeCount(LOOKUP_SHAPE, 12, SITE)]


def test_shapes_are_counted_apart_and_values_do_not_split_a_shape(orders):
    pool, observer = orders
    with n_plus_one_guard(threshold=100) as guard:
        for i in range(5):
            run(pool, observer, f"SELECT * FROM fp_obs_orders WHERE id = {i}")  # inline literal
            run(pool, observer, LOOKUP, (i,))
        run(pool, observer, "SELECT count(*) FROM fp_obs_orders WHERE customer IN (1, 2)")
        run(pool, observer, "SELECT count(*) FROM fp_obs_orders WHERE customer IN (3)")
    assert guard.counts == {
        LOOKUP_SHAPE: 10,
        "SELECT count(*) FROM fp_obs_orders WHERE customer IN (...)": 2,
    }
    assert guard.report() == []


def test_nothing_is_counted_outside_a_guard(orders):
    pool, observer = orders
    guard = n_plus_one_guard(threshold=1)
    for i in range(5):
        run(pool, observer, LOOKUP, (i,))
    with guard:
        run(pool, observer, LOOKUP, (0,))
    run(pool, observer, LOOKUP, (1,))
    assert guard.counts == {LOOKUP_SHAPE: 1}


def test_nested_scopes_count_and_report_each_on_their_own(orders):
    pool, observer = orders
    with pytest.warns(NPlusOneWarning) as record, n_plus_one_guard(threshold=5) as outer:
        run(pool, observer, LOOKUP, (0,))
        with n_plus_one_guard(threshold=2, action="log") as inner:
            for i in range(3):
                run(pool, observer, LOOKUP, (i,))
        assert inner.counts == {LOOKUP_SHAPE: 3}
        assert inner.report() == [ShapeCount(LOOKUP_SHAPE, 3, SITE)]
        assert not record  # the outer scope has seen 4
        run(pool, observer, LOOKUP, (1,))
        run(pool, observer, LOOKUP, (2,))
        assert len(record) == 1 and record[0].message.count == 6  # type: ignore[union-attr]
    assert outer.counts == {LOOKUP_SHAPE: 6}
    assert inner.counts == {LOOKUP_SHAPE: 3}  # kept after the scope ended


def test_every_scope_counts_and_reports_an_execution_before_one_raises(orders, caplog):
    pool, observer = orders
    caplog.set_level(logging.WARNING, logger="fastpool.nplusone")
    with n_plus_one_guard(threshold=2, action="raise") as outer, \
            pytest.raises(NPlusOneDetected) as info, \
            n_plus_one_guard(threshold=2, action="log") as inner:
        for i in range(3):
            run(pool, observer, LOOKUP, (i,))
    assert info.value.count == 3
    assert outer.counts == inner.counts == {LOOKUP_SHAPE: 3}
    assert [r.fastpool_count for r in caplog.records if r.name == "fastpool.nplusone"] == [3]


def test_a_pools_guard_counts_only_that_pools_statements(make_pool, tmp_path):
    observers = []
    pools = []
    for name in ("a", "b"):
        pool = make_pool(url=f"sqlite:///{tmp_path / name}.db", name=f"fp_obs_{name}")
        pools.append(pool)
        observers.append(QueryObserver(pool.name, None))
    (a, b), (obs_a, obs_b) = pools, observers
    with n_plus_one_guard(threshold=100) as everything, \
            obs_a.n_plus_one_guard(threshold=100) as only_a:
        for i in range(3):
            run(a, obs_a, "SELECT ?", (i,))
            run(b, obs_b, "SELECT ?", (i,))
        run(b, obs_b, "SELECT 2 + ?", (1,))
    assert only_a.counts == {"SELECT ?": 3}
    assert everything.counts == {"SELECT ?": 6, "SELECT ? + ?": 1}
    assert "pool 'fp_obs_a'" in repr(only_a) and "all pools" in repr(everything)


def test_a_guard_sees_only_its_own_thread(orders):
    pool, observer = orders
    both_in_scope = threading.Barrier(2, timeout=10)
    other_counts: dict[str, int] = {}
    errors: list[BaseException] = []

    def other_thread() -> None:
        try:
            for i in range(10):  # no guard in this thread: nothing counted anywhere
                run(pool, observer, LOOKUP, (i,))
            with n_plus_one_guard(threshold=100) as guard:
                both_in_scope.wait()
                run(pool, observer, "SELECT customer FROM fp_obs_orders WHERE id = ?", (1,))
                both_in_scope.wait()
            other_counts.update(guard.counts)
        except BaseException as exc:
            errors.append(exc)

    with n_plus_one_guard(threshold=3, action="raise") as mine:
        thread = threading.Thread(target=other_thread)
        thread.start()
        both_in_scope.wait()
        run(pool, observer, LOOKUP, (1,))
        both_in_scope.wait()
        thread.join(10)
    assert not errors
    assert mine.counts == {LOOKUP_SHAPE: 1}
    assert other_counts == {"SELECT customer FROM fp_obs_orders WHERE id = ?": 1}


def test_asyncio_tasks_have_their_own_scopes(orders):
    pool, observer = orders

    @n_plus_one_guard(threshold=3, action="raise")
    async def handler(customer: int, lookups: int) -> int:
        for i in range(lookups):
            run(pool, observer, LOOKUP, (i,))
            await asyncio.sleep(0)  # interleave the two tasks
        return customer

    async def main() -> list[Any]:
        return await asyncio.gather(handler(1, 3), handler(2, 3), handler(3, 4),
                                    return_exceptions=True)

    ok1, ok2, failed = asyncio.run(main())
    assert (ok1, ok2) == (1, 2)  # 3 each: had they shared a scope, 6 would have raised
    assert isinstance(failed, NPlusOneDetected) and failed.count == 4


def test_a_task_that_outlives_its_guard_is_no_longer_counted(orders):
    pool, observer = orders

    async def background() -> None:
        for i in range(3):
            run(pool, observer, LOOKUP, (i,))
            await asyncio.sleep(0)

    async def main() -> NPlusOneGuard:
        with n_plus_one_guard(threshold=1, action="raise") as guard:
            task = asyncio.create_task(background())  # inherits the guard's context
        await task  # runs after the guard exited: must not raise into the task
        return guard

    assert asyncio.run(main()).counts == {}


def test_as_a_decorator_every_call_is_a_fresh_scope(orders):
    pool, observer = orders

    @observer.n_plus_one_guard(threshold=4, action="raise")
    def handler(lookups: int) -> str:
        """Doc kept."""
        for i in range(lookups):
            run(pool, observer, LOOKUP, (i,))
        return "done"

    assert handler.__doc__ == "Doc kept." and handler.__name__ == "handler"
    assert [handler(4), handler(4)] == ["done", "done"]
    with pytest.raises(NPlusOneDetected):
        handler(5)


def test_a_guard_exits_cleanly_when_its_block_raises(orders):
    pool, observer = orders
    guard = n_plus_one_guard(threshold=1, action="raise")
    with pytest.raises(NPlusOneDetected), guard:
        run(pool, observer, LOOKUP, (1,))
        run(pool, observer, LOOKUP, (2,))
    for i in range(3):  # the scope is gone: no more counting, no more raising
        run(pool, observer, LOOKUP, (i,))
    assert guard.counts == {LOOKUP_SHAPE: 2}


def test_an_active_guard_cannot_be_entered_again():
    guard = n_plus_one_guard()
    with guard, pytest.raises(RuntimeError, match="already active"), guard:
        pass


@pytest.mark.parametrize("threshold", [0, -1, 1.5, True, "10", None])
def test_bad_threshold_is_a_config_error(threshold):
    with pytest.raises(ConfigError, match="threshold must be an integer >= 1"):
        n_plus_one_guard(threshold=threshold)


@pytest.mark.parametrize("action", ["error", "WARN", None, ""])
def test_bad_action_is_a_config_error(action):
    with pytest.raises(ConfigError, match="action must be one of 'warn', 'raise', 'log'"):
        NPlusOneGuard(10, action)


# ---- the slow-query log ---------------------------------------------------------------

@pytest.fixture
def sleepy(make_pool):
    """A pool whose connections have sleep_ms(ms): a query that takes at least that long."""
    def configure(conn: sqlite3.Connection) -> None:
        conn.create_function("sleep_ms", 1, lambda ms: time.sleep(ms / 1000))

    return make_pool(max_size=1, configure=configure)


def test_a_slow_query_is_logged_with_shape_params_and_site_never_values(sleepy, caplog):
    caplog.set_level(logging.WARNING, logger="fastpool.slow")
    observer = QueryObserver(sleepy.name, slow_query_ms=10)
    rows = run(sleepy, observer, "SELECT sleep_ms(30), ? || 'x'", ("hunter2-secret",))
    assert rows == [(None, "hunter2-secretx")]
    (record,) = [r for r in caplog.records if r.name == "fastpool.slow"]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "SELECT sleep_ms(?), ? || ?" in message
    assert "1 parameter" in message and SITE in message and repr(sleepy.name) in message
    assert "hunter2" not in message and "30" not in message.split("ms")[1]
    assert record.fastpool_duration_ms >= 30 and record.fastpool_nparams == 1
    assert observer.slow_queries == 1


def test_slow_query_threshold_is_a_strict_crossing_and_none_disables(sleepy, caplog):
    caplog.set_level(logging.WARNING, logger="fastpool.slow")
    observer = QueryObserver(sleepy.name, slow_query_ms=10)
    observer.observe("SELECT 1", 0, 10_000_000)  # exactly 10 ms: not above
    observer.observe("SELECT 2", 0, 10_000_001)
    disabled = QueryObserver(sleepy.name, slow_query_ms=None)
    run(sleepy, disabled, "SELECT sleep_ms(20)")
    assert [r.fastpool_sql for r in caplog.records] == ["SELECT ?"]
    assert (observer.slow_queries, disabled.slow_queries) == (1, 0)
    with n_plus_one_guard(threshold=100):  # the counting path compares the same way
        observer.observe("SELECT 3", 0, 10_000_000)
    assert observer.slow_queries == 1
    everything = QueryObserver("p", slow_query_ms=0)
    everything.observe("SELECT 1", 0, 1)
    assert everything.slow_queries == 1


def test_a_slow_statement_is_logged_even_when_its_guard_raises(orders, caplog):
    pool, _ = orders
    caplog.set_level(logging.WARNING, logger="fastpool.slow")
    observer = QueryObserver(pool.name, slow_query_ms=0)
    with observer.n_plus_one_guard(threshold=1, action="raise"):
        run(pool, observer, LOOKUP, (1,))
        with pytest.raises(NPlusOneDetected):
            run(pool, observer, LOOKUP, (2,))
    assert observer.slow_queries == 2


@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), "10", True])
def test_bad_slow_query_ms_is_a_config_error(value):
    with pytest.raises(ConfigError, match="slow_query_ms must be a number of milliseconds"):
        QueryObserver("p", slow_query_ms=value)


def test_the_quiet_path_does_no_work(orders):
    """No guard and a fast statement: not even the shape is computed."""
    pool, _ = orders
    observer = QueryObserver(pool.name, slow_query_ms=1000)
    before = lexer_module._cached_shape.cache_info()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for i in range(5):
            observer.observe(f"SELECT {i} AS fp_obs_quiet", 0, 1_000)
    assert lexer_module._cached_shape.cache_info() == before
    assert observer.slow_queries == 0


def test_statement_objects_are_observed_by_their_text():
    observer = QueryObserver("fp_obs_text", slow_query_ms=None)
    with n_plus_one_guard(threshold=100) as guard:
        observer.observe(b"SELECT 1 FROM fp_obs_orders", 0, 1)
        observer.observe("SELECT 2 FROM fp_obs_orders", 0, 1)
    assert guard.counts == {"SELECT ? FROM fp_obs_orders": 2}

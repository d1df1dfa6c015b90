"""Every integer option has an upper bound the compiled core can hold, and
every option of the wrong type is a ConfigError naming the option and what it
takes (issue 20, group 4): never an OverflowError, MemoryError or
AttributeError from deep inside."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import fastpool
from fastpool import ConfigError
from fastpool.options import MAX_INT, MAX_POOL_SIZE
from fastpool.writes import bulk

HUGE = 10**12


@pytest.mark.parametrize(("options", "message"), [
    ({"max_size": HUGE}, rf"max_size must be an integer >= 1 and <= {MAX_POOL_SIZE}.*, "
                         rf"got {HUGE}"),
    ({"max_size": MAX_POOL_SIZE + 1}, rf"max_size must be an integer >= 1 and <= "
                                      rf"{MAX_POOL_SIZE}"),
    ({"min_size": HUGE}, rf"min_size must be an integer >= 0 and <= "
                                           rf"{MAX_POOL_SIZE}"),
    ({"max_waiting": HUGE}, rf"max_waiting must be an integer >= 0 and <= {MAX_INT}"),
    ({"max_size": "auto", "max_size_ceiling": HUGE},
     rf"max_size_ceiling must be an integer >= 1 and <= {MAX_POOL_SIZE}"),
    ({"max_size": "auto", "min_size": HUGE}, rf"min_size must be an integer >= 0 and <= "
                                             rf"{MAX_POOL_SIZE}"),
    ({"statement_cache_size": HUGE}, rf"statement_cache_size must be an integer >= 0 and "
                                     rf"<= {MAX_INT}"),
    ({"result_cache_entries": HUGE}, rf"result_cache_entries must be an integer >= 0 and "
                                     rf"<= {MAX_INT}"),
    ({"hooks": [1]}, r"hooks must be a mapping of event name \(connect, acquire, release, "
                     r"close, timeout\) to callable, or None, got \[1\]"),
    ({"hooks": 1}, r"hooks must be a mapping of event name"),
    ({"hooks": {"acquire": 1}}, r"the callback for 'acquire' must be callable, got 1"),
])
def test_out_of_range_and_wrongly_typed_pool_options_are_config_errors(db_path, options,
                                                                      message):
    with pytest.raises(ConfigError, match=message):
        fastpool.create_pool(f"sqlite:///{db_path}", **options)


def test_the_asyncio_pool_checks_the_same_bounds(db_path):
    async def main() -> None:
        for options, message in (({"max_size": HUGE}, "max_size must be an integer >= 1 and"),
                                 ({"hooks": [1]}, "hooks must be a mapping of event name")):
            with pytest.raises(ConfigError, match=message):
                await fastpool.create_async_pool(f"sqlite+aiosqlite:///{db_path}", **options)

    asyncio.run(main())


def test_the_largest_pool_is_accepted(make_pool):
    pool = make_pool(max_size=MAX_POOL_SIZE, min_size=0)
    assert pool.max_size == MAX_POOL_SIZE


def test_resize_refuses_a_size_the_core_cannot_hold_and_keeps_the_old_one(make_pool):
    pool = make_pool(max_size=2)
    with pytest.raises(ConfigError, match=rf"max_size must be an integer >= 1 and <= "
                                          rf"{MAX_POOL_SIZE}, got {HUGE}"):
        pool.resize(0, HUGE)
    with pytest.raises(ConfigError, match=r"min_size must be an integer >= 0 and <= "):
        pool.resize(HUGE)
    assert pool.max_size == 2


@pytest.mark.parametrize(("call", "message"), [
    (lambda p: p.batcher(max_batch=HUGE), "max_batch"),
    (lambda p: p.batcher(max_pending=HUGE), "max_pending"),
    (lambda p: p.batcher(max_retries=HUGE), "max_retries"),
    (lambda p: p.batcher(flushers=HUGE), "flushers"),
    (lambda p: p.transaction(lambda c: None, retries=HUGE), "retries"),
    (lambda p: bulk.copy_rows(p, "t", ["a"], [], chunk_rows=HUGE), "chunk_rows"),
])
def test_feature_integer_options_are_bounded(make_pool, call, message):
    pool = make_pool(max_size=1)
    with pytest.raises(ConfigError, match=rf"{message} must be an integer >= \d and <= \d+, "
                                          rf"got {HUGE}"):
        call(pool)
    assert pool.stats().acquisitions == 0


def test_integer_options_the_core_never_holds_may_be_large(make_pool):
    """Bytes and table rows: bounded by int64, not by the core's int."""
    pool: Any = make_pool(max_size=1, result_cache_bytes=HUGE)
    assert pool.max_size == 1


@pytest.mark.parametrize(("url", "options", "message"), [
    ("mysql://root@127.0.0.1/test", {"connect_timeout": HUGE},
     rf"mysql: connect_timeout must be an integer >= 0 and <= {MAX_INT}"),
    ("mysql://root@127.0.0.1/test", {"read_timeout": HUGE}, "mysql: read_timeout must be"),
    ("mysql://root@127.0.0.1/test", {"client_flag": 10**30}, "mysql: client_flag must be"),
    ("mysql://root@127.0.0.1/test?write_timeout=99999999999", {},
     "mysql: write_timeout must be"),
    ("postgresql://postgres@127.0.0.1/test", {"statement_timeout": 1e300},
     r"postgresql: statement_timeout must be a number of seconds >= 0 and <= 2147483\.647"),
    ("postgresql://postgres@127.0.0.1/test", {"lock_timeout": HUGE},
     "postgresql: lock_timeout must be"),
    ("postgresql://postgres@127.0.0.1/test", {"prepare_threshold": 10**30},
     "postgresql: prepare_threshold must be an integer"),
])
def test_driver_integer_options_are_bounded_before_connecting(url, options, message):
    """Before: mysqlclient's OverflowError at each connect, retried until
    PoolTimeout; PostgreSQL's server refusing the timeout at connect."""
    pytest.importorskip("MySQLdb" if url.startswith("mysql") else "psycopg")
    from fastpool.drivers import from_url

    with pytest.raises(ConfigError, match=message):
        from_url(url, **options)


def test_a_factory_whose_client_overflows_fails_at_once(make_pool):
    from fastpool import ConnectError

    def connect() -> Any:
        raise OverflowError("signed integer is greater than maximum")

    pool = make_pool(connect=connect, min_size=0, max_size=1)
    with pytest.raises(ConnectError, match="signed integer is greater than maximum"):
        pool.acquire()

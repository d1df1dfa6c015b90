"""Bad options get a clear ConfigError naming the problem."""

from __future__ import annotations

import pytest

import fastpool
from fastpool import ConfigError


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"min_size": -1}, "min_size must be an integer >= 0"),
        ({"max_size": 0}, "max_size must be an integer >= 1"),
        ({"max_size": 2.5}, "max_size must be an integer"),
        ({"max_size": True}, "max_size must be an integer"),
        ({"min_size": 5, "max_size": 2}, r"min_size \(5\) must not exceed max_size \(2\)"),
        ({"timeout": -1}, "timeout must be a finite number of seconds"),
        ({"timeout": float("nan")}, "timeout must be"),
        ({"timeout": "3"}, "timeout must be"),
        ({"max_waiting": -3}, "max_waiting must be an integer >= 0"),
        ({"max_lifetime": 0}, "max_lifetime must be a finite number of seconds > 0 or None"),
        ({"max_idle": -5}, "max_idle must be"),
        ({"alive_bypass": -0.1}, "alive_bypass must be"),
        ({"reuse": "random"}, "reuse must be 'lifo' or 'fifo'"),
        ({"leak_threshold": 0}, "leak_threshold must be"),
        ({"configure": 42}, "configure must be callable"),
        ({"name": 3}, "name must be a string"),
    ],
)
def test_bad_pool_options(db_path, options, message):
    with pytest.raises(ConfigError, match=message):
        fastpool.create_pool(f"sqlite:///{db_path}", **options)


def test_unknown_option_is_a_config_error(db_path):
    with pytest.raises(ConfigError, match="max_connections"):
        fastpool.create_pool(f"sqlite:///{db_path}", max_connections=3)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("oracle://scott:tiger@db/orcl", "unknown URL scheme 'oracle'"),
        ("app.db", "no scheme"),
        ("sqlite://", "names no database"),
        ("sqlite://otherhost/x.db", "must have no host"),
        ("sqlite:///x.db?journal=wal", "unknown URL option 'journal'"),
        ("sqlite:///x.db?timeout=soon", "timeout must be a number"),
        ("sqlite:///x.db?journal_mode=fast", "journal_mode must be one of"),
        ("sqlite:///x.db?isolation_level=bogus", "isolation_level must be one of"),
    ],
)
def test_bad_urls(url, message):
    with pytest.raises(ConfigError, match=message):
        fastpool.create_pool(url)


def test_password_is_redacted_in_url_errors():
    with pytest.raises(ConfigError) as info:
        fastpool.create_pool("oracle://scott:tiger@db/orcl")
    assert "tiger" not in str(info.value)
    assert "scott:***@db" in str(info.value)


def test_pool_needs_exactly_one_connection_source(db_path):
    with pytest.raises(ConfigError, match="exactly one of connect"):
        fastpool.Pool()
    with pytest.raises(ConfigError, match="connect must be callable"):
        fastpool.Pool(connect="sqlite:///x.db")


def test_bad_acquire_timeout(make_pool):
    pool = make_pool()
    for bad in (-1, "1", True, float("inf")):
        with pytest.raises(ConfigError, match="timeout must be"):
            pool.acquire(timeout=bad)


def test_bad_resize_keeps_the_old_sizes(make_pool):
    pool = make_pool(min_size=1, max_size=4)
    with pytest.raises(ConfigError, match="must not exceed"):
        pool.resize(5, 3)
    assert (pool.min_size, pool.max_size) == (1, 4)

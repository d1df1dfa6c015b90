"""What an AsyncCluster's monitor connects with: the blocking driver of each
node's URL, with the options both clients share (no server needed: drivers
are built, never connected)."""

from __future__ import annotations

import pytest

from fastpool import ConfigError
from fastpool.cluster.aio import _monitor_driver


def test_asyncpg_options_and_url_parameters_stay_with_asyncpg():
    driver = _monitor_driver(
        "postgresql+asyncpg://app@db1:5433/shop?statement_cache_size=0&command_timeout=5",
        {"database": "orders", "password": "s3cret", "statement_cache_size": 0,
         "pgbouncer": "transaction", "max_size": 10, "name": "c-0"}, None)
    where = driver.describe()
    assert "db1:5433" in where and "dbname=orders" in where and "user=app" in where
    assert driver.client.name == "psycopg" and not driver.client.is_async
    assert driver.prepare_threshold is None  # the PgBouncer profile: nothing prepared
    assert "s3cret" not in where


def test_psycopg_async_options_go_to_the_monitor_but_its_row_factory():
    from psycopg.rows import dict_row

    driver = _monitor_driver("postgresql://app@db1/shop",
                             {"row_factory": dict_row, "connect_timeout": 3,
                              "sslmode": "disable", "min_size": 2}, None)
    assert driver.client.name == "psycopg"
    assert driver._factories == {}  # the monitor reads plain tuples
    assert driver.params["connect_timeout"] == "3" and driver.params["sslmode"] == "disable"


def test_mysql_clients_options_are_translated():
    driver = _monitor_driver("mysql+aiomysql://root@db2:3307/shop",
                             {"db": "orders", "passwd": "x", "autocommit": True}, None)
    assert driver.client.name == "mysqlclient"
    assert "db2:3307" in driver.describe() and "orders" in driver.describe()


def test_a_client_ssl_option_needs_the_monitors_own():
    with pytest.raises(ConfigError, match="monitor_options"):
        _monitor_driver("postgresql+asyncpg://app@db1/shop", {"ssl": "require"}, None)
    driver = _monitor_driver("postgresql+asyncpg://app@db1/shop", {"ssl": "require"},
                             {"sslmode": "require"})
    assert driver.client.name == "psycopg"

"""WAL positions as tokens, and replica lag from the primary's sampled positions."""

from __future__ import annotations

import pytest

from fastpool import ConfigError
from fastpool.cluster.lsn import LagClock, format_lsn, parse_lsn


@pytest.mark.parametrize("text", ["0/0", "0/3000148", "16/B374D848", "FFFFFFFF/FFFFFFFF"])
def test_a_token_is_postgres_own_lsn_text_and_round_trips(text):
    assert format_lsn(parse_lsn(text)) == text
    assert parse_lsn("1/0") == 1 << 32


@pytest.mark.parametrize("bad", ["", "0", "/1", "1/", "0/xyz", "1/2/3", "123456789/0", None, 5])
def test_a_bad_token_is_a_config_error_naming_the_form(bad):
    with pytest.raises(ConfigError, match="WAL position such as"):
        parse_lsn(bad)


def test_lag_is_the_time_since_the_primary_first_had_what_the_replica_lacks():
    clock = LagClock()
    assert clock.lag(0, 100.0) == 0.0  # nothing sampled: nothing to lag behind
    clock.sample(10.0, 100)
    clock.sample(11.0, 100)  # not moved: the first time seen counts
    clock.sample(12.0, 200)
    clock.sample(13.0, 300)
    assert clock.sampled_at == 13.0 and clock.latest == 300
    assert clock.lag(300, 20.0) == 0.0
    assert clock.lag(400, 20.0) == 0.0
    assert clock.lag(250, 20.0) == 7.0   # 300 was first seen at 13
    assert clock.lag(200, 20.0) == 7.0
    assert clock.lag(150, 20.0) == 8.0   # 200 at 12
    assert clock.lag(0, 20.0) == 10.0


def test_lag_beyond_the_kept_history_counts_from_the_oldest_kept_sample():
    clock = LagClock(keep=4)
    for i in range(1, 20):
        clock.sample(float(i), i * 10)
    assert clock.latest == 190
    assert clock.lag(0, 100.0) <= 100.0 - 12.0  # the oldest kept is recent
    assert clock.lag(185, 100.0) == 100.0 - 19.0


def test_a_mariadb_position_is_the_gtid_sequence_number_of_the_lowest_domain():
    from fastpool.cluster.servers import MariaDBServer, gtid_seq

    assert gtid_seq("0-1-42") == 42
    assert gtid_seq("") == 0 and gtid_seq(None) == 0
    assert gtid_seq("1-2-7,0-1-42") == 42
    assert MariaDBServer.parse("0-2-43") == 43
    assert MariaDBServer.parse(MariaDBServer.format(43)) == 43
    for bad in ("0/3000148", "0-1", "a-b-c", None):
        with pytest.raises(ConfigError, match="MariaDB GTID such as"):
            MariaDBServer.parse(bad)

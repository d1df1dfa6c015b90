"""A small bank on psycopg 3, switched from psycopg_pool to fastpool.

16 worker threads move money between 50 accounts through a pool of 2 to 4
connections: each transfer is a transaction that locks both accounts, refuses
an overdraft, moves the amount and writes a ledger row. Now and then a worker
audits the books on a connection of its own (getconn/putconn). At the end every
balance must equal its opening amount plus its ledger, and the total must be
unchanged.

    python examples/psycopg_pool_app.py [CONNINFO]   # default: the local test database

examples/psycopg_pool_app.py is the original, written for psycopg_pool; this
file differs from it only in the import (tests/integration/compat/
test_psycopg_pool_compat.py checks that, and runs both).
"""

from __future__ import annotations

import os
import random
import sys
from concurrent.futures import ThreadPoolExecutor

from psycopg import sql

# The pool: this import is all that differs between the two versions of this program.
from fastpool.compat.psycopg_pool import ConnectionPool

DSN = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
    "BANK_DSN", "postgresql://postgres@127.0.0.1:5432/test")
SUFFIX = os.environ.get("BANK_SUFFIX", "")  # lets two runs share a database
ACCOUNT = sql.Identifier(f"bank_account{SUFFIX}")
LEDGER = sql.Identifier(f"bank_ledger{SUFFIX}")
ACCOUNTS, OPENING = 50, 1000
WORKERS, TRANSFERS = 16, int(os.environ.get("BANK_TRANSFERS", "50"))


def configure(conn):
    """Every new connection: a statement timeout, and back to idle for the pool."""
    conn.execute("SET statement_timeout = '10s'")
    conn.commit()


def create_books(pool):
    with pool.connection() as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}, {}").format(LEDGER, ACCOUNT))
        conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, balance int NOT NULL)")
                     .format(ACCOUNT))
        conn.execute(sql.SQL("CREATE TABLE {} (src int, dst int, amount int)").format(LEDGER))
        with conn.cursor() as cur:
            cur.executemany(sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(ACCOUNT),
                            [(i, OPENING) for i in range(1, ACCOUNTS + 1)])


def transfer(pool, rng):
    """Move a random amount; False if the payer cannot afford it."""
    src, dst = rng.sample(range(1, ACCOUNTS + 1), 2)
    amount = rng.randint(1, 400)
    with pool.connection() as conn, conn.transaction():
        # Both rows locked in id order: two opposite transfers cannot deadlock.
        rows = conn.execute(
            sql.SQL("SELECT id, balance FROM {} WHERE id = ANY(%s) ORDER BY id FOR UPDATE")
            .format(ACCOUNT), ([src, dst],)).fetchall()
        if dict(rows)[src] < amount:
            return False
        move = sql.SQL("UPDATE {} SET balance = balance + %s WHERE id = %s").format(ACCOUNT)
        conn.execute(move, (-amount, src))
        conn.execute(move, (amount, dst))
        conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s, %s)").format(LEDGER),
                     (src, dst, amount))
    return True


def audit(pool):
    """(total balance, ledger rows, accounts whose balance disagrees with the ledger)."""
    conn = pool.getconn()
    try:
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            total = conn.execute(sql.SQL("SELECT sum(balance) FROM {}").format(ACCOUNT)
                                 ).fetchone()[0]
            entries = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(LEDGER)
                                   ).fetchone()[0]
            wrong = conn.execute(sql.SQL(
                "SELECT count(*) FROM {a} WHERE balance <> %s"
                " + coalesce((SELECT sum(amount) FROM {l} WHERE dst = {a}.id), 0)"
                " - coalesce((SELECT sum(amount) FROM {l} WHERE src = {a}.id), 0)"
            ).format(a=ACCOUNT, l=LEDGER), (OPENING,)).fetchone()[0]
        return total, entries, wrong
    finally:
        pool.putconn(conn)


def worker(pool, seed):
    rng = random.Random(seed)
    moved = refused = 0
    for i in range(TRANSFERS):
        if transfer(pool, rng):
            moved += 1
        else:
            refused += 1
        if i % 10 == 9:
            _, _, wrong = audit(pool)
            assert wrong == 0, f"{wrong} accounts disagree with the ledger mid-run"
    return moved, refused


def main():
    with ConnectionPool(DSN, min_size=2, max_size=4, name="bank", timeout=30,
                        configure=configure, check=ConnectionPool.check_connection) as pool:
        create_books(pool)
        with ThreadPoolExecutor(WORKERS) as executor:
            results = list(executor.map(lambda seed: worker(pool, seed), range(WORKERS)))
        moved = sum(m for m, _ in results)
        refused = sum(r for _, r in results)
        total, entries, wrong = audit(pool)
        print(f"transfers attempted: {moved + refused} (each moved or refused: "
              f"{moved + refused == WORKERS * TRANSFERS})")
        print(f"ledger rows match the transfers moved: {entries == moved}")
        print(f"total balance: {total} (opened with {ACCOUNTS * OPENING})")
        print(f"accounts disagreeing with the ledger: {wrong}")
        stats = pool.get_stats()
        print(f"pool {pool.name!r}: {stats['pool_size']} connections (max {stats['pool_max']}), "
              f"{stats['requests_num']} requests, {stats.get('requests_queued', 0)} waited",
              file=sys.stderr)
        with pool.connection() as conn:
            conn.execute(sql.SQL("DROP TABLE {}, {}").format(LEDGER, ACCOUNT))
    return 0 if total == ACCOUNTS * OPENING and wrong == 0 and entries == moved else 1


if __name__ == "__main__":
    sys.exit(main())

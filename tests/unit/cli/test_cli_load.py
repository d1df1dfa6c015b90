"""``fastpool load``: a CSV file into an SQLite table, end to end in a subprocess.

(The same command on PostgreSQL is in tests/integration/writes/test_bulk.py.)
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

CSV = 'id,name,score\n1,plain,1.5\n2,"comma, ""quoted""\nand a newline",\n\n3,,2\n'


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fastpool", "load", *args],
                          capture_output=True, text=True, input=stdin, timeout=120)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "load.db"
    # sqlite3's `with conn:` commits but does not close (Python 3.13 warns).
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE fp_bulk_cli (id INTEGER PRIMARY KEY, name TEXT, score REAL)")
    return path


def rows(db: Path) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT * FROM fp_bulk_cli ORDER BY id").fetchall()


def test_load_reads_the_header_and_reports_rows_and_rate(db, tmp_path):
    csv_file = tmp_path / "in.csv"
    csv_file.write_text(CSV)
    proc = run("--url", f"sqlite:///{db}", "--table", "fp_bulk_cli", str(csv_file))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("loaded 3 rows into fp_bulk_cli in ")
    assert proc.stdout.rstrip().endswith("rows/s)")
    # Without --null, an empty field is an empty string (the blank line is skipped).
    assert rows(db) == [(1, "plain", 1.5), (2, 'comma, "quoted"\nand a newline', ""),
                        (3, "", 2.0)]


def test_null_turns_matching_fields_into_null(db, tmp_path):
    csv_file = tmp_path / "in.csv"
    csv_file.write_text(CSV)
    proc = run("--url", f"sqlite:///{db}", "--table", "fp_bulk_cli", "--null", "",
               str(csv_file))
    assert proc.returncode == 0, proc.stderr
    assert rows(db) == [(1, "plain", 1.5), (2, 'comma, "quoted"\nand a newline', None),
                        (3, None, 2.0)]


def test_stdin_columns_delimiter_and_upsert(db):
    first = run("--url", f"sqlite:///{db}", "--table", "fp_bulk_cli", "--no-header",
                "--columns", "id,name", "--delimiter", "tab", "-", stdin="1\tone\n2\ttwo\n")
    assert first.returncode == 0, first.stderr
    again = run("--url", f"sqlite:///{db}", "--table", "fp_bulk_cli", "--no-header",
                "--columns", "id,name", "--delimiter", "\\t", "--on-conflict", "id", "-",
                stdin="2\tTWO\n3\tthree\n")
    assert again.returncode == 0, again.stderr
    assert rows(db) == [(1, "one", None), (2, "TWO", None), (3, "three", None)]


def test_progress_always_draws_a_line_on_stderr(db, tmp_path):
    csv_file = tmp_path / "in.csv"
    csv_file.write_text("id,name,score\n" + "".join(f"{i},n{i},{i}\n" for i in range(30_000)))
    proc = run("--url", f"sqlite:///{db}", "--table", "fp_bulk_cli", "--progress", "always",
               str(csv_file))
    assert proc.returncode == 0, proc.stderr
    assert "100.0%" in proc.stderr and "30,000 rows" in proc.stderr and "rows/s" in proc.stderr
    assert len(rows(db)) == 30_000


def test_a_missing_table_is_a_message_and_exit_1(db, tmp_path):
    csv_file = tmp_path / "in.csv"
    csv_file.write_text(CSV)
    proc = run("--url", f"sqlite:///{db}", "--table", "fp_bulk_nope", str(csv_file))
    assert proc.returncode == 1
    assert proc.stderr.strip() == "fastpool load: OperationalError: no such table: fp_bulk_nope"


def test_a_short_row_names_its_line_and_loads_nothing(db, tmp_path):
    csv_file = tmp_path / "in.csv"
    csv_file.write_text('id,name,score\n1,a,1\n2,"two\nlines",2\n3,c\n4,d,4\n')
    proc = run("--url", f"sqlite:///{db}", "--table", "fp_bulk_cli", str(csv_file))
    assert proc.returncode == 1
    assert f"fastpool load: {csv_file} line 5: rows[2] has 2 values, expected 3 " \
           "(id, name, score); nothing was loaded" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert rows(db) == []


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--url", "bogus://x", "--table", "t", "FILE"], 1,
     "fastpool load: ConfigError: unknown URL scheme 'bogus'"),
    (["--url", "URL", "--table", "fp_bulk_cli", "/nonexistent/in.csv"], 1,
     "fastpool load: cannot read /nonexistent/in.csv: No such file or directory"),
    (["--url", "URL", "--table", "fp_bulk_cli", "--no-header", "FILE"], 2,
     "fastpool load: --no-header needs --columns"),
    (["--url", "URL", "--table", "fp_bulk_cli", "--delimiter", ";;", "FILE"], 2,
     "argument --delimiter: must be one character"),
    (["--url", "URL", "--table", "fp_bulk_cli", "--columns", "a,,b", "FILE"], 2,
     "argument --columns: expected comma-separated names"),
    (["--url", "URL", "--table", "fp_bulk_cli", "--columns", "id,id", "FILE"], 1,
     "fastpool load: ConfigError: columns are named more than once: id"),
    (["--url", "URL", "--table", "fp_bulk_cli", "--on-conflict", "other", "FILE"], 1,
     "fastpool load: ConfigError: on_conflict names 'other', which columns"),
])
def test_bad_arguments_are_a_message_not_a_traceback(db, tmp_path, args, code, message):
    csv_file = tmp_path / "in.csv"
    csv_file.write_text(CSV)
    args = [str(csv_file) if a == "FILE" else f"sqlite:///{db}" if a == "URL" else a
            for a in args]
    proc = run(*args)
    assert proc.returncode == code
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert rows(db) == []

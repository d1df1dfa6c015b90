"""Every subcommand, a bad value of every option it has: one line on stderr,
``fastpool <command>: ...``, exit 2 for a usage error and 1 for a failure,
never a traceback or argparse's usage block (issue 20, group 4; README: the
command line). The table must name every option the parser has: a new option
without a bad-value case fails ``test_every_option_has_a_case``."""

from __future__ import annotations

import argparse
import contextlib
import socket
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from fastpool.cli import build_parser, main
from fastpool.options import MAX_POOL_SIZE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# command -> option -> (arguments, exit code, what the line says). URL: an
# SQLite file with table t (id, name); FILE: a CSV file for it.
CASES: dict[str, dict[str, tuple[list[str], int, str]]] = {
    "bench": {
        "--url": (["--url", "nosuch://x"], 1, "unknown URL scheme 'nosuch'"),
        "--threads": (["--threads", "many"], 2, "argument --threads: must be an integer"),
        "--duration": (["--duration", "soon"], 2,
                       "argument --duration: must be a finite number of seconds > 0"),
        "--min-size": (["--min-size", "x"], 2, "argument --min-size: must be an integer"),
        "--max-size": (["--max-size", str(10**12)], 2,
                       f"argument --max-size: must be an integer >= 1 and <= {MAX_POOL_SIZE}"),
        "--query": (["--url", "URL", "--duration", "0.2", "--query", "SELEC 1"], 1,
                    "OperationalError: near \"SELEC\": syntax error"),
        "--json": (["--json=yes"], 2, "ignored explicit argument 'yes'"),
        "--progress": (["--progress", "sometimes"], 2, "argument --progress: invalid choice"),
        "--async": (["--async=yes"], 2, "ignored explicit argument 'yes'"),
        "--uvloop": (["--uvloop"], 2, "--uvloop goes with --async"),
        "--sweep": (["--sweep", "1,x"], 2, "comma-separated pool sizes"),
        "--plot": (["--plot", "x.png"], 2, "--plot goes with --sweep"),
        "--compare": (["--compare", "--sweep", "1"], 2, "--compare goes without --sweep"),
    },
    "top": {
        "--endpoint": (["--endpoint", "http://127.0.0.1:PORT", "--once"], 2, "cannot reach"),
        "--url": (["--url", "nosuch://x", "--once"], 1, "unknown URL scheme 'nosuch'"),
        "--threads": (["--threads", "0"], 2, "argument --threads: must be an integer >= 1"),
        "--max-size": (["--max-size", "-3"], 2, "argument --max-size: must be an integer >= 1"),
        "--query": (["--url", "URL", "--query", "SELEC 1", "--once", "--interval", "0.2"], 1,
                    "OperationalError: near \"SELEC\": syntax error"),
        "--interval": (["--interval", "0"], 2,
                       "argument --interval: must be a finite number of seconds > 0"),
        "--iterations": (["--iterations", "-1"], 2,
                         "argument --iterations: must be an integer >= 0"),
        "--once": (["--once=yes"], 2, "ignored explicit argument 'yes'"),
        "--pool": (["--pool"], 2, "argument --pool: expected one argument"),
    },
    "load": {
        "FILE.csv": (["--url", "URL", "--table", "t", "/nonexistent/in.csv"], 1,
                     "cannot read /nonexistent/in.csv"),
        "--url": (["--url", "nosuch://x", "--table", "t", "FILE"], 1,
                  "unknown URL scheme 'nosuch'"),
        "--table": (["--url", "URL", "--table", "", "FILE"], 1,
                    "table must be a non-empty string"),
        "--schema": (["--url", "URL", "--table", "t", "--schema", "nosuch", "FILE"], 1,
                     "no such table: nosuch.t"),
        "--columns": (["--url", "URL", "--table", "t", "--columns", "a,,b", "FILE"], 2,
                      "argument --columns: expected comma-separated names"),
        "--on-conflict": (["--url", "URL", "--table", "t", "--on-conflict", "zz", "FILE"], 1,
                          "on_conflict names 'zz'"),
        "--delimiter": (["--url", "URL", "--table", "t", "--delimiter", ";;", "FILE"], 2,
                        "argument --delimiter: must be one character"),
        "--no-header": (["--url", "URL", "--table", "t", "--no-header", "FILE"], 2,
                        "--no-header needs --columns"),
        "--null": (["--url", "URL", "--table", "t", "FILE", "--null"], 2,
                   "argument --null: expected one argument"),
        "--encoding": (["--url", "URL", "--table", "t", "--encoding", "bogus", "FILE"], 2,
                       "argument --encoding: unknown encoding 'bogus'"),
        "--progress": (["--url", "URL", "--table", "t", "--progress", "x", "FILE"], 2,
                       "argument --progress: invalid choice"),
    },
}


def _options(parser: argparse.ArgumentParser) -> dict[str, set[str]]:
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    found: dict[str, set[str]] = {}
    for command, sub in subs.choices.items():
        names = set()
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            names.add(action.option_strings[0] if action.option_strings else action.metavar)
        found[command] = names
    return found


def test_every_option_has_a_case():
    assert {c: set(o) for c, o in CASES.items()} == _options(build_parser())


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    db = tmp_path / "cli.db"
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
    csv_file = tmp_path / "in.csv"
    csv_file.write_text("id,name\n1,a\n")
    return {"URL": f"sqlite:///{db}", "FILE": str(csv_file),
            "http://127.0.0.1:PORT": f"http://127.0.0.1:{_free_port()}"}


CASE_LIST = [(c, o, *case) for c, options in CASES.items() for o, case in options.items()]


@pytest.mark.parametrize(("command", "option", "args", "code", "says"), CASE_LIST,
                         ids=[f"{c} {o}" for c, o, *_ in CASE_LIST])
def test_a_bad_value_is_one_line_and_the_right_exit_code(files, capsys, command, option, args,
                                                         code, says):
    argv = [command, *(files.get(a, a) for a in args)]
    try:
        got: Any = main(argv)
    except SystemExit as exc:
        got = exc.code
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert got == code, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"fastpool {command}: "), err
    assert says in lines[0], err
    assert "usage:" not in err and "Traceback" not in err
    assert out == ""


def test_no_command_is_one_line_too(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastpool: "), lines

"""What the bulk loader's per-server modules share: limits, the row error,
the encoders (compiled or pure Python), progress reports."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from fastpool._loader import load_extension
from fastpool.errors import FastpoolError

__all__ = ["DEFAULT_CHUNK_ROWS", "MYSQL_MAX_STATEMENT", "MYSQL_SLACK", "PG_CHUNK_BYTES",
           "ErrorFactory", "Progress", "Reporter", "RowError", "encoder_impl", "encoders"]

#: Rows per chunk: one progress call, one MySQL statement at most, one
#: SQLite ``executemany``.
DEFAULT_CHUNK_ROWS = 10_000
#: Bytes of COPY data per write (psycopg hands libpq at most 128 KiB at once).
PG_CHUNK_BYTES = 128 * 1024
#: Upper bound of one MySQL INSERT statement, below ``max_allowed_packet``:
#: beyond ~1 MiB larger statements load no faster and cost memory.
MYSQL_MAX_STATEMENT = 1024 * 1024
MYSQL_SLACK = 64  # the protocol's own header bytes, and a margin

Progress = Callable[[int], object]


class RowError(FastpoolError, ValueError):
    """A row or record that cannot be loaded: the wrong number of values, a
    missing or unexpected key, a value its column cannot take.

    ``index`` is its 0-based position in the input, ``column`` the column's
    name (None when the row as a whole is wrong). The load was rolled back.
    """

    def __init__(self, message: str, index: int, column: str | None = None) -> None:
        super().__init__(message)
        self.index = index
        self.column = column


def encoder_impl() -> str:
    """``"compiled"`` or ``"python"``: which encoder loads run with."""
    return str(encoders().__impl__)


def encoders() -> ModuleType:
    """The compiled encoder, else its pure-Python twin (as FASTPOOL_IMPL says)."""
    return load_extension("fastpool._bulkenc", "fastpool._bulkenc_py", what="bulk encoder")


class ErrorFactory:
    """What the encoders call to build the error for a bad row (``col`` -1:
    the row as a whole); ``types`` names the columns' types where known."""

    def __init__(self, label: str, columns: list[str]) -> None:
        self.label = label
        self.columns = columns
        self.types: dict[str, str] = {}

    def __call__(self, index: int, col: int, problem: str,
                 cause: BaseException | None = None) -> RowError:
        if col < 0:
            return RowError(f"{self.label}[{index}] {problem} ({', '.join(self.columns)}); "
                            "nothing was loaded", index)
        name = self.columns[col]
        typ = f" ({self.types[name]})" if name in self.types else ""
        return RowError(f"{self.label}[{index}], column {name!r}{typ}: {problem}; "
                        "nothing was loaded", index, name)


class Reporter:
    """Calls ``progress(rows_done)`` when the count moved since the last call."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.reported = 0

    def __call__(self, done: int) -> None:
        if self.progress is not None and done > self.reported:
            self.reported = done
            self.progress(done)

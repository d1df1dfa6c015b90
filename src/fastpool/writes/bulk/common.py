"""What the bulk loader's per-server modules share: limits, the row error,
the encoders (compiled or pure Python), progress reports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from operator import length_hint
from types import ModuleType
from typing import Any

from fastpool._loader import load_extension
from fastpool.errors import FastpoolError

__all__ = ["DEFAULT_CHUNK_ROWS", "MYSQL_MAX_STATEMENT", "MYSQL_SLACK", "PG_CHUNK_BYTES",
           "ErrorFactory", "Feed", "Job", "Progress", "Reporter", "RowError", "async_chunks",
           "encoder_impl", "encoders"]

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
            whole = RowError(f"{self.label}[{index}] {problem} ({', '.join(self.columns)}); "
                             "nothing was loaded", index)
            whole.__cause__ = cause
            return whole
        name = self.columns[col]
        typ = f" ({self.types[name]})" if name in self.types else ""
        err = RowError(f"{self.label}[{index}], column {name!r}{typ}: {problem}; "
                       "nothing was loaded", index, name)
        err.__cause__ = cause  # the driver's error, when the server found it
        return err


class Reporter:
    """Calls ``progress(rows_done)`` when the count moved since the last call."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.reported = 0

    def __call__(self, done: int) -> None:
        if self.progress is not None and done > self.reported:
            self.reported = done
            self.progress(done)


class Feed:
    """The rows of one load, as the (synchronous) encoders take them.

    From a sync iterable, ``it`` is its iterator and the encoders read it
    straight through (``more`` is False: its end is the load's end). From an
    async iterable, ``it`` is a list iterator over the last batch of at most
    ``batch`` rows, and ``more`` says the source may have more: when ``empty``
    the flow asks its I/O to ``refill`` (an await), and ``room(n)`` keeps an
    encoder from running past the batch, whose end is not the load's end.
    """

    __slots__ = ("_batch", "_convert", "_source", "it", "more", "read")

    def __init__(self, rows: Iterator[Any] | AsyncIterator[Any], batch: int = 0,
                 convert: Callable[[list[Any], int], list[Any]] | None = None) -> None:
        self.read = 0
        self._batch = batch
        self._convert = convert
        if isinstance(rows, Iterator):
            self.it: Iterator[Any] = rows
            self.more = False
            self._source: AsyncIterator[Any] | None = None
        else:
            self.it = iter(())
            self.more = True
            self._source = rows

    @property
    def empty(self) -> bool:
        """The batch is used up and the async source may have more rows."""
        return self.more and not length_hint(self.it)

    def room(self, max_rows: int) -> int:
        """How many rows an encoder may take now (at most ``max_rows``)."""
        return min(max_rows, length_hint(self.it)) if self.more else max_rows

    async def refill(self) -> None:
        """Read the async source's next batch (an empty one ends the feed)."""
        assert self._source is not None
        batch: list[Any] = []
        source, size = self._source, self._batch
        try:
            while len(batch) < size:
                batch.append(await source.__anext__())
        except StopAsyncIteration:
            self.more = False
        if self._convert is not None:
            batch = self._convert(batch, self.read)
        self.read += len(batch)
        self.it = iter(batch)


async def async_chunks(chunks: Iterator[bytes | None], feed: Feed) -> AsyncIterator[bytes]:
    """The data of a COPY flow's ``chunks`` (see postgres.py), refilling ``feed``
    where the flow asks for it (``None``): what an asyncio client writes."""
    for data in chunks:
        if data is None:
            await feed.refill()
        else:
            yield data


class Job:
    """One load, checked: what every server's flow reads."""

    __slots__ = ("chunk_rows", "columns", "error", "feed", "keys", "max_packet", "pg_format",
                 "report", "table")

    def __init__(self, table: tuple[str, ...], columns: list[str], feed: Feed, keys: list[str],
                 pg_format: str, progress: Progress | None, chunk_rows: int,
                 max_packet: int | None, label: str) -> None:
        self.table = table
        self.columns = columns
        self.feed = feed
        self.keys = keys
        self.pg_format = pg_format
        self.report = Reporter(progress)
        self.chunk_rows = chunk_rows
        self.max_packet = max_packet
        self.error = ErrorFactory(label, columns)

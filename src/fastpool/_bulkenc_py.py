"""The pure-Python twin of ``fastpool._bulkenc``: the same API and output.

Used when the compiled encoder is not built, or with ``FASTPOOL_IMPL=python``.
It is several times slower per value; ``fastpool.writes.bulk`` works the same.
"""

from __future__ import annotations

import datetime as _dt
import math
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__impl__ = "python"

GENERIC, INT2, INT4, INT8, FLOAT4, FLOAT8, TEXT, BYTEA, BOOL, TIMESTAMPTZ, TIMESTAMP, DATE = \
    range(12)
SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
TRAILER = b"\xff\xff"

_NULL = b"\xff\xff\xff\xff"
_I16 = struct.Struct(">h").pack
_F2 = struct.Struct(">ih").pack
_F4 = struct.Struct(">ii").pack
_F8 = struct.Struct(">iq").pack
_FF4 = struct.Struct(">if").pack
_FD8 = struct.Struct(">id").pack
_LEN = struct.Struct(">i").pack
_PG_EPOCH = _dt.datetime(2000, 1, 1)
_PG_EPOCH_TZ = _dt.datetime(2000, 1, 1, tzinfo=_dt.timezone.utc)
_PG_EPOCH_DAYS = _dt.date(2000, 1, 1).toordinal()
_USEC = _dt.timedelta(microseconds=1)
_RANGES = {INT2: (-(1 << 15), (1 << 15) - 1), INT4: (-(1 << 31), (1 << 31) - 1),
           INT8: (-(1 << 63), (1 << 63) - 1)}
_ESCAPES = {ord("\\"): "\\\\", ord("\t"): "\\t", ord("\n"): "\\n", ord("\r"): "\\r"}
_BYTE_ESCAPES = [(b"\\", b"\\\\"), (b"\t", b"\\t"), (b"\n", b"\\n"), (b"\r", b"\\r")]

ErrorFactory = Callable[[int, int, str, "BaseException | None"], BaseException]


def _rejected(value: Any, exc: BaseException) -> str:
    """The problem text for a value whose fallback raised ``exc``."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"cannot take {type(value).__name__} {text} ({type(exc).__name__}: {exc})"


def _as_tuple(row: Any, index: int, ncols: int, error: ErrorFactory) -> Sequence[Any]:
    """``row`` as an exact tuple or list of ``ncols`` values (another sized
    iterable is copied into a tuple), or raise ``error(index, -1, problem, None)``.
    Shared by both encoders, like ``_as_tuple`` in the compiled module."""
    if type(row) is not tuple and type(row) is not list:
        if isinstance(row, (str, bytes, bytearray, dict)) or not hasattr(row, "__len__"):
            raise error(index, -1, f"is a {type(row).__name__}, not a tuple or list of values",
                        None)
        row = tuple(row)
    if len(row) != ncols:
        raise error(index, -1, f"has {len(row)} values, expected {ncols}", None)
    return row  # type: ignore[no-any-return]


class Encoder:
    """See ``fastpool._bulkenc.Encoder``."""

    def __init__(self, kinds: Sequence[int], fallbacks: Sequence[Callable[[Any], Any] | None],
                 *, binary: bool, error: ErrorFactory) -> None:
        kinds = list(kinds)
        if not 0 < len(kinds) <= 1600 or len(fallbacks) != len(kinds):
            raise ValueError(f"need 1 to 1600 kinds and as many fallbacks, got "
                             f"{len(kinds)} and {len(fallbacks)}")
        for kind in kinds:
            if not GENERIC <= kind <= DATE:
                raise ValueError(f"unknown column kind {kind!r}")
        self._kinds = [k if binary or k == TEXT else GENERIC for k in kinds]
        self._fallbacks = list(fallbacks)
        self._binary = binary
        self._error = error
        self._started = False
        self.rows = 0
        self.done = False

    def encode(self, it: Iterator[Any], max_bytes: int, max_rows: int) -> bytes:
        if self.done:
            return b""
        out = bytearray()
        if self._binary and not self._started:
            out += SIGNATURE
        self._started = True
        n = 0
        if max_rows > 0:
            for row in it:
                values = _as_tuple(row, self.rows, len(self._kinds), self._error)
                if self._binary:
                    out += _I16(len(values))
                    for col, value in enumerate(values):
                        out += self._binary_value(col, value)
                else:
                    out += b"\t".join([self._text_value(col, v) for col, v in
                                       enumerate(values)])
                    out += b"\n"
                self.rows += 1
                n += 1
                if n >= max_rows or len(out) >= max_bytes:
                    return bytes(out)
        self.done = True
        if self._binary:
            out += TRAILER
        return bytes(out)

    def _binary_value(self, col: int, v: Any) -> bytes:
        kind = self._kinds[col]
        t = type(v)
        if v is None:
            return _NULL
        if kind in _RANGES and isinstance(v, int):
            lo, hi = _RANGES[kind]
            if not lo <= v <= hi:
                raise self._error(self.rows, col, f"{v!r} is out of range", None)
            return (_F8 if kind == INT8 else _F4 if kind == INT4 else _F2)(
                8 if kind == INT8 else 4 if kind == INT4 else 2, v)
        if kind == TEXT and isinstance(v, str):
            data = v.encode()
            return _LEN(len(data)) + data
        if kind in (FLOAT8, FLOAT4) and (t is float or isinstance(v, int)):
            return _FD8(8, v) if kind == FLOAT8 else _FF4(4, v)
        if kind == TIMESTAMPTZ and isinstance(v, _dt.datetime) and v.utcoffset() is not None:
            return _F8(8, (v - _PG_EPOCH_TZ) // _USEC)
        if kind == TIMESTAMP and isinstance(v, _dt.datetime) and v.tzinfo is None:
            return _F8(8, (v - _PG_EPOCH) // _USEC)
        if kind == BOOL and (v is True or v is False):
            return b"\x00\x00\x00\x01\x01" if v else b"\x00\x00\x00\x01\x00"
        if kind == BYTEA and t is bytes:
            return _LEN(len(v)) + bytes(v)
        if kind == DATE and t is _dt.date:
            return _F4(4, v.toordinal() - _PG_EPOCH_DAYS)
        data = self._fallback(col, v)
        return _NULL if data is None else _LEN(len(data)) + bytes(data)

    def _text_value(self, col: int, v: Any) -> bytes:
        if v is None:
            return b"\\N"
        if self._kinds[col] == TEXT and isinstance(v, str):
            return v.translate(_ESCAPES).encode()
        data = self._fallback(col, v)
        if data is None:
            return b"\\N"
        raw = bytes(data)
        for char, escaped in _BYTE_ESCAPES:
            raw = raw.replace(char, escaped)
        return raw

    def _fallback(self, col: int, v: Any) -> Any:
        fallback = self._fallbacks[col]
        if fallback is None:
            raise self._error(self.rows, col, f"cannot take a {type(v).__name__} value", None)
        try:
            return fallback(v)
        except Exception as exc:
            raise self._error(self.rows, col, _rejected(v, exc), exc) from exc


class ValuesEncoder:
    """See ``fastpool._bulkenc.ValuesEncoder``."""

    def __init__(self, ncols: int, string_literal: Callable[[bytes], bytes],
                 fallback: Callable[[Any], bytes], encoding: str, *,
                 error: ErrorFactory) -> None:
        if not 0 < ncols <= 4096:
            raise ValueError(f"ncols must be 1 to 4096, got {ncols}")
        self._ncols = ncols
        self._string_literal = string_literal
        self._fallback = fallback
        self._encoding = encoding
        self._error = error
        self.rows = 0
        self.done = False
        self.pending: Any = None

    def encode(self, it: Iterator[Any], max_bytes: int, max_rows: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        if self.pending is not None:
            row, self.pending = self.pending, None
            parts.append(self._row(row))
            size = len(parts[0])
            self.rows += 1
        if len(parts) >= max_rows:
            return parts[0]
        for row in it:
            literal = self._row(row)
            if parts and size + 1 + len(literal) > max_bytes:
                self.pending = row
                return b",".join(parts)
            parts.append(literal)
            size += len(literal) + (1 if len(parts) > 1 else 0)
            self.rows += 1
            if len(parts) >= max_rows:
                return b",".join(parts)
        self.done = True
        return b",".join(parts)

    def _row(self, row: Any) -> bytes:
        values = _as_tuple(row, self.rows, self._ncols, self._error)
        return b"(" + b",".join([self._value(col, v) for col, v in enumerate(values)]) + b")"

    def _value(self, col: int, v: Any) -> bytes:
        t = type(v)
        if v is None:
            return b"NULL"
        if v is True or v is False:
            return b"1" if v else b"0"
        if t is int:
            return str(v).encode()
        if t is float and math.isfinite(v):
            s = repr(v)
            return (s if "e" in s else s + "e0").encode()
        if t is str:
            return self._string_literal(v.encode(self._encoding))
        if t is _dt.datetime and v.tzinfo is None:
            s = f"'{v.year:04}-{v.month:02}-{v.day:02} {v.hour:02}:{v.minute:02}:{v.second:02}"
            return (s + (f".{v.microsecond:06}'" if v.microsecond else "'")).encode()
        if t is _dt.date:
            return f"'{v.year:04}-{v.month:02}-{v.day:02}'".encode()
        try:
            return bytes(self._fallback(v))
        except Exception as exc:
            raise self._error(self.rows, col, _rejected(v, exc), exc) from exc

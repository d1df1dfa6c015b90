# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: binding=False
"""Encodes rows of Python values into PostgreSQL COPY data, in compiled code.

``fastpool.writes.bulk`` streams a generator of tuples into ``COPY ... FROM STDIN``.
psycopg's ``write_row`` looks up a dumper and calls it for every value; this
encoder knows each column's type in advance (read from the catalog) and
writes the common ones (integers, floats, text, bytea, bool, date and
timestamps) straight into one buffer per chunk, a few tens of nanoseconds a
value. A value of another Python type than the column's usual one (a Decimal
for a float8, a naive datetime for a timestamptz...) goes to that column's
``fallback`` (psycopg's own dumper), so the result is what psycopg would send.

Binary format: the PGCOPY signature, per row an int16 field count and per
field an int32 length (-1 for NULL) and the bytes, the -1 trailer. Text
format: tab-separated, ``\\N`` for NULL, backslash escapes.

It does no I/O and knows no driver: ``encode()`` returns bytes for the caller
to write. ``fastpool._bulkenc_py`` is the pure-Python twin with the same API.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize
from cpython.bytes cimport PyBytes_GET_SIZE
from cpython.datetime cimport (
    PyDate_CheckExact,
    PyDateTime_Check,
    PyDateTime_DATE_GET_HOUR,
    PyDateTime_DATE_GET_MICROSECOND,
    PyDateTime_DATE_GET_MINUTE,
    PyDateTime_DATE_GET_SECOND,
    PyDateTime_DATE_GET_TZINFO,
    PyDateTime_GET_DAY,
    PyDateTime_GET_MONTH,
    PyDateTime_GET_YEAR,
    import_datetime,
    timedelta_days,
    timedelta_microseconds,
    timedelta_seconds,
)
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_AsDouble, PyFloat_CheckExact
from cpython.list cimport PyList_CheckExact, PyList_GET_ITEM, PyList_GET_SIZE
from cpython.long cimport PyLong_AsLongLong, PyLong_Check
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_CheckExact, PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.unicode cimport PyUnicode_Check
from libc.stdint cimport INT64_MAX, INT64_MIN, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy

import datetime as _datetime

__impl__ = "compiled"

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object s, Py_ssize_t* size) except NULL

import_datetime()

# Column kinds; GENERIC columns (and mismatched values) go to the fallback.
GENERIC = 0
INT2 = 1
INT4 = 2
INT8 = 3
FLOAT4 = 4
FLOAT8 = 5
TEXT = 6
BYTEA = 7
BOOL = 8
TIMESTAMPTZ = 9
TIMESTAMP = 10
DATE = 11

cdef enum:
    K_GENERIC, K_INT2, K_INT4, K_INT8, K_FLOAT4, K_FLOAT8, K_TEXT, K_BYTEA, K_BOOL
    K_TIMESTAMPTZ, K_TIMESTAMP, K_DATE
    MAX_COLUMNS = 1600  # PostgreSQL's limit

#: The binary COPY header: signature, flags, header extension length.
SIGNATURE = b"PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
cdef const char* _SIGNATURE = b"PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00"
cdef const char* _TRAILER = b"\xff\xff"

cdef object _UTC = _datetime.timezone.utc
# Days from 0001-01-01 (proleptic Gregorian ordinal 1) to 2000-01-01.
cdef int64_t _PG_EPOCH_ORDINAL = _datetime.date(2000, 1, 1).toordinal()
cdef int64_t _USEC_PER_DAY = 86400000000


cdef inline int64_t _ordinal(int y, int m, int d) noexcept:
    """date(y, m, d).toordinal() without a Python call."""
    cdef int64_t yy = y - 1
    cdef int64_t days = yy * 365 + yy // 4 - yy // 100 + yy // 400
    cdef int leap = (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0))
    cdef int* before = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334]
    days += before[m - 1] + (1 if leap and m > 2 else 0)
    return days + d


def _rejected(value, exc):
    """The problem text for a value whose fallback raised ``exc``."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"cannot take {type(value).__name__} {text} ({type(exc).__name__}: {exc})"


cdef int _grow(char** buf, Py_ssize_t* cap, Py_ssize_t need) except -1:
    """Reallocate ``*buf`` (of ``*cap`` bytes) to hold at least ``need`` bytes,
    doubling from 64 KiB."""
    cdef Py_ssize_t new_cap = cap[0] * 2 if cap[0] else 65536
    cdef char* new
    while new_cap < need:
        new_cap *= 2
    new = <char*>realloc(buf[0], new_cap)
    if new == NULL:
        raise MemoryError()
    buf[0] = new
    cap[0] = new_cap
    return 0


cdef inline bint _is_row(object row, Py_ssize_t ncols) noexcept:
    """Whether ``row`` is an exact tuple or list of ``ncols`` values: the
    common case, checked inline without reference counting."""
    if PyTuple_CheckExact(row):
        return PyTuple_GET_SIZE(row) == ncols
    return PyList_CheckExact(row) and PyList_GET_SIZE(row) == ncols


cdef object _as_tuple(object row, Py_ssize_t index, Py_ssize_t ncols, object error):
    """``row`` as an exact tuple or list of ``ncols`` values (another sized
    iterable is copied into a tuple), or raise ``error(index, -1, problem, None)``."""
    cdef Py_ssize_t n
    if not PyTuple_CheckExact(row) and not PyList_CheckExact(row):
        if isinstance(row, (str, bytes, bytearray, dict)) or not hasattr(row, "__len__"):
            raise error(index, -1, f"is a {type(row).__name__}, not a tuple or list of values",
                        None)
        row = tuple(row)
    n = len(row)
    if n != ncols:
        raise error(index, -1, f"has {n} values, expected {ncols}", None)
    return row


cdef inline object _item(object row, bint is_tuple, Py_ssize_t i, Py_ssize_t n,
                         Py_ssize_t index, PyObject* error):
    """Value ``i`` of a row from ``_as_tuple`` of ``n`` values; a list that a
    fallback resized meanwhile raises ``error(index, -1, problem, None)``.
    (``error`` is borrowed: passing it for every value costs no reference counting.)"""
    if is_tuple:
        return <object>PyTuple_GET_ITEM(row, i)
    if PyList_GET_SIZE(row) != n:
        raise (<object>error)(index, -1, "changed size while being encoded", None)
    return <object>PyList_GET_ITEM(row, i)


@cython.final
cdef class Encoder:
    """Encodes rows of ``len(kinds)`` values into COPY data, chunk by chunk.

    ``kinds``: one kind per column (INT8, TEXT... or GENERIC). ``fallbacks``:
    per column, a callable turning a value the fast path does not handle into
    bytes (or None for NULL), or None to refuse such values. ``binary``:
    binary COPY format, else text. ``error(row, column, problem, cause)``
    builds the exception raised for a bad row (``column`` is -1 for a row of
    the wrong width).
    """

    cdef int ncols
    cdef int kinds[MAX_COLUMNS]
    cdef list fallbacks
    cdef object error
    cdef bint binary
    cdef char* buf
    cdef Py_ssize_t size
    cdef Py_ssize_t cap
    cdef readonly Py_ssize_t rows
    cdef readonly bint done
    cdef bint started

    def __cinit__(self) -> None:
        self.buf = NULL
        self.size = 0
        self.cap = 0

    def __init__(self, kinds, fallbacks, *, bint binary, error) -> None:
        kinds = list(kinds)
        fallbacks = list(fallbacks)
        if not 0 < len(kinds) <= MAX_COLUMNS or len(fallbacks) != len(kinds):
            raise ValueError(f"need 1 to {MAX_COLUMNS} kinds and as many fallbacks, got "
                             f"{len(kinds)} and {len(fallbacks)}")
        self.ncols = len(kinds)
        for i, kind in enumerate(kinds):
            if not K_GENERIC <= kind <= K_DATE:
                raise ValueError(f"unknown column kind {kind!r}")
            # Text format writes every non-str value through its fallback.
            self.kinds[i] = kind if binary or kind == K_TEXT else K_GENERIC
        self.fallbacks = fallbacks
        self.binary = binary
        self.error = error
        self.rows = 0
        self.done = False
        self.started = False

    def __dealloc__(self) -> None:
        free(self.buf)

    def encode(self, it, Py_ssize_t max_bytes, Py_ssize_t max_rows) -> bytes:
        """Encode rows taken from the iterator ``it`` until the chunk holds at
        least ``max_bytes`` bytes or ``max_rows`` rows, or ``it`` is exhausted
        (then ``done`` is True and the chunk ends the COPY data)."""
        cdef Py_ssize_t n = 0
        if self.done:
            return b""
        self.size = 0
        if self.binary and not self.started:
            self._put(_SIGNATURE, 19)
        self.started = True
        if max_rows > 0:
            for row in it:
                self._row(row)
                self.rows += 1
                n += 1
                if n >= max_rows or self.size >= max_bytes:
                    break
            else:
                self._finish()
        else:
            self._finish()
        return PyBytes_FromStringAndSize(self.buf, self.size)

    cdef void _finish(self):
        self.done = True
        if self.binary:
            self._put(_TRAILER, 2)

    # ---- the buffer ---------------------------------------------------

    cdef inline int _reserve(self, Py_ssize_t need) except -1:
        if self.size + need > self.cap:
            _grow(&self.buf, &self.cap, self.size + need)
        return 0

    cdef inline int _put(self, const char* data, Py_ssize_t n) except -1:
        self._reserve(n)
        memcpy(self.buf + self.size, data, n)
        self.size += n
        return 0

    cdef inline void _be16(self, uint16_t v) noexcept:
        cdef uint8_t* p = <uint8_t*>(self.buf + self.size)
        p[0] = v >> 8
        p[1] = v
        self.size += 2

    cdef inline void _be32(self, uint32_t v) noexcept:
        cdef uint8_t* p = <uint8_t*>(self.buf + self.size)
        p[0] = v >> 24
        p[1] = v >> 16
        p[2] = v >> 8
        p[3] = v
        self.size += 4

    cdef inline void _be64(self, uint64_t v) noexcept:
        self._be32(<uint32_t>(v >> 32))
        self._be32(<uint32_t>v)

    # ---- rows -----------------------------------------------------------

    cdef int _row(self, object row) except -1:
        cdef Py_ssize_t i
        cdef Py_ssize_t n = self.ncols
        cdef bint is_tuple
        if not _is_row(row, n):
            row = _as_tuple(row, self.rows, n, self.error)
        is_tuple = PyTuple_CheckExact(row)
        if self.binary:
            self._reserve(2)
            self._be16(<uint16_t>n)
        for i in range(n):
            value = _item(row, is_tuple, i, n, self.rows, <PyObject*>self.error)
            if self.binary:
                self._binary_value(i, value)
            else:
                if i:
                    self._put("\t", 1)
                self._text_value(i, value)
        if not self.binary:
            self._put("\n", 1)
        return 0

    cdef int _binary_value(self, int col, object v) except -1:
        cdef int kind = self.kinds[col]
        cdef long long x
        cdef double d
        cdef float f
        cdef uint64_t bits64
        cdef uint32_t bits32
        cdef const char* s
        cdef Py_ssize_t n
        if v is None:
            self._reserve(4)
            self._be32(<uint32_t>-1)
            return 0
        if kind == K_INT8 and PyLong_Check(v):
            x = self._as_int(col, v, INT64_MIN, INT64_MAX)
            self._reserve(12)
            self._be32(8)
            self._be64(<uint64_t>x)
            return 0
        if kind == K_TEXT and PyUnicode_Check(v):
            s = PyUnicode_AsUTF8AndSize(v, &n)
            self._field(s, n)
            return 0
        if kind == K_FLOAT8 and (PyFloat_CheckExact(v) or PyLong_Check(v)):
            d = PyFloat_AS_DOUBLE(v) if PyFloat_CheckExact(v) else PyFloat_AsDouble(v)
            self._reserve(12)
            self._be32(8)
            memcpy(&bits64, &d, 8)
            self._be64(bits64)
            return 0
        if kind == K_TIMESTAMPTZ and PyDateTime_Check(v):
            tz = <object>PyDateTime_DATE_GET_TZINFO(v)
            offset = None if tz is None or tz is _UTC else v.utcoffset()
            if tz is _UTC or offset is not None:  # else naive: psycopg's dumper decides
                self._reserve(12)
                self._be32(8)
                self._be64(<uint64_t>self._timestamp(v, offset))
                return 0
        if kind == K_TIMESTAMP and PyDateTime_Check(v) \
                and <object>PyDateTime_DATE_GET_TZINFO(v) is None:
            self._reserve(12)
            self._be32(8)
            self._be64(<uint64_t>self._timestamp(v, None))
            return 0
        if kind == K_INT4 and PyLong_Check(v):
            x = self._as_int(col, v, -2147483648, 2147483647)
            self._reserve(8)
            self._be32(4)
            self._be32(<uint32_t>x)
            return 0
        if kind == K_INT2 and PyLong_Check(v):
            x = self._as_int(col, v, -32768, 32767)
            self._reserve(6)
            self._be32(2)
            self._be16(<uint16_t>x)
            return 0
        if kind == K_FLOAT4 and (PyFloat_CheckExact(v) or PyLong_Check(v)):
            f = <float>(PyFloat_AS_DOUBLE(v) if PyFloat_CheckExact(v) else PyFloat_AsDouble(v))
            self._reserve(8)
            self._be32(4)
            memcpy(&bits32, &f, 4)
            self._be32(bits32)
            return 0
        if kind == K_BOOL and (v is True or v is False):
            self._reserve(5)
            self._be32(1)
            self.buf[self.size] = 1 if v is True else 0
            self.size += 1
            return 0
        if kind == K_BYTEA and PyBytes_CheckExact(v):
            self._field(PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v))
            return 0
        if kind == K_DATE and PyDate_CheckExact(v):
            self._reserve(8)
            self._be32(4)
            self._be32(<uint32_t>(_ordinal(PyDateTime_GET_YEAR(v), PyDateTime_GET_MONTH(v),
                                           PyDateTime_GET_DAY(v)) - _PG_EPOCH_ORDINAL))
            return 0
        data = self._fallback(col, v)
        if data is None:
            self._reserve(4)
            self._be32(<uint32_t>-1)
        else:
            data = bytes(data)
            self._field(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
        return 0

    cdef inline int _field(self, const char* s, Py_ssize_t n) except -1:
        if n > 0x7FFFFFFF:
            raise OverflowError("a value longer than 2 GiB")
        self._reserve(4 + n)
        self._be32(<uint32_t>n)
        memcpy(self.buf + self.size, s, n)
        self.size += n
        return 0

    cdef long long _as_int(self, int col, object v, long long lo, long long hi) except? -1:
        cdef long long x
        try:
            x = PyLong_AsLongLong(v)
        except OverflowError:
            raise self.error(self.rows, col, f"{v!r} is out of range", None) from None
        if x < lo or x > hi:
            raise self.error(self.rows, col, f"{v!r} is out of range", None)
        return x

    cdef int64_t _timestamp(self, object v, object offset) except? -1:
        """Microseconds from 2000-01-01 to ``v`` minus ``offset`` (a timedelta or None)."""
        cdef int64_t us = (
            (_ordinal(PyDateTime_GET_YEAR(v), PyDateTime_GET_MONTH(v), PyDateTime_GET_DAY(v))
             - _PG_EPOCH_ORDINAL) * _USEC_PER_DAY
            + (PyDateTime_DATE_GET_HOUR(v) * 3600 + PyDateTime_DATE_GET_MINUTE(v) * 60
               + PyDateTime_DATE_GET_SECOND(v)) * <int64_t>1000000
            + PyDateTime_DATE_GET_MICROSECOND(v))
        if offset is not None:
            us -= (timedelta_days(offset) * _USEC_PER_DAY
                   + timedelta_seconds(offset) * <int64_t>1000000
                   + timedelta_microseconds(offset))
        return us

    cdef object _fallback(self, int col, object v):
        fallback = self.fallbacks[col]
        if fallback is None:
            raise self.error(self.rows, col, f"cannot take a {type(v).__name__} value", None)
        try:
            return fallback(v)
        except Exception as exc:
            raise self.error(self.rows, col, _rejected(v, exc), exc) from exc

    # ---- text format ----------------------------------------------------

    cdef int _text_value(self, int col, object v) except -1:
        cdef const char* s
        cdef Py_ssize_t n
        if v is None:
            self._put("\\N", 2)
            return 0
        if self.kinds[col] == K_TEXT and PyUnicode_Check(v):
            s = PyUnicode_AsUTF8AndSize(v, &n)
            self._escaped(s, n)
            return 0
        data = self._fallback(col, v)
        if data is None:
            self._put("\\N", 2)
        else:
            data = bytes(data)
            self._escaped(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
        return 0

    cdef int _escaped(self, const char* s, Py_ssize_t n) except -1:
        """Append ``s`` with COPY text escapes: backslash, tab, newline, CR."""
        cdef Py_ssize_t i
        cdef char c
        cdef char* out
        self._reserve(2 * n)
        out = self.buf + self.size
        for i in range(n):
            c = s[i]
            if c == b"\\":
                out[0] = b"\\"
                out[1] = b"\\"
                out += 2
            elif c == b"\t":
                out[0] = b"\\"
                out[1] = b"t"
                out += 2
            elif c == b"\n":
                out[0] = b"\\"
                out[1] = b"n"
                out += 2
            elif c == b"\r":
                out[0] = b"\\"
                out[1] = b"r"
                out += 2
            else:
                out[0] = c
                out += 1
        self.size = out - self.buf
        return 0


cdef extern from "Python.h":
    char* PyOS_double_to_string(double val, char format_code, int precision, int flags,
                                int* ptype) except NULL
    void PyMem_Free(void* p)
    int Py_DTSF_ADD_DOT_0
    bint PyLong_CheckExact(object o)
    bint PyUnicode_CheckExact(object o)
    object PyUnicode_AsEncodedString(object s, const char* encoding, const char* errors)

cdef extern from "<stdio.h>":
    int snprintf(char* buf, size_t n, const char* fmt, ...)


@cython.final
cdef class ValuesEncoder:
    """Encodes rows into the ``(v1,v2),(v1,v2)`` list of a MySQL multi-row INSERT.

    Each value becomes the literal mysqlclient's ``conn.literal()`` would make
    of it: NULL, 1/0 for bools, integers, floats as ``repr`` with ``e0``, str
    through ``string_literal`` (the client library's escaping, which knows
    the connection's charset and SQL mode) and naive datetimes and dates as
    quoted ISO strings, formatted here; anything else (Decimal, bytes, aware
    datetimes, inf...) goes to ``fallback``, i.e. ``conn.literal``.
    """

    cdef int ncols
    cdef object string_literal
    cdef object fallback
    cdef object error
    cdef bytes encoding
    cdef bint utf8
    cdef char* buf
    cdef Py_ssize_t size
    cdef Py_ssize_t cap
    cdef readonly Py_ssize_t rows
    cdef readonly bint done
    cdef public object pending  # a row read but not yet encoded (it did not fit)

    def __cinit__(self) -> None:
        self.buf = NULL
        self.size = 0
        self.cap = 0

    def __init__(self, int ncols, string_literal, fallback, str encoding, *, error) -> None:
        if not 0 < ncols <= 4096:
            raise ValueError(f"ncols must be 1 to 4096, got {ncols}")
        self.ncols = ncols
        self.string_literal = string_literal
        self.fallback = fallback
        self.encoding = encoding.encode()
        self.utf8 = encoding.lower().replace("-", "").replace("_", "") in ("utf8", "utf8mb4")
        self.error = error
        self.rows = 0
        self.done = False
        self.pending = None

    def __dealloc__(self) -> None:
        free(self.buf)

    def encode(self, it, Py_ssize_t max_bytes, Py_ssize_t max_rows) -> bytes:
        """The next rows of ``it``, comma-separated, at most ``max_bytes`` long
        (unless a single row is longer: it comes alone) and ``max_rows`` rows;
        ``b""`` once ``it`` is exhausted (``done``)."""
        cdef Py_ssize_t n = 0
        cdef Py_ssize_t mark
        self.size = 0
        if self.pending is not None:
            row, self.pending = self.pending, None
            self._row(row)
            self.rows += 1
            n = 1
        if n >= max_rows:
            return PyBytes_FromStringAndSize(self.buf, self.size)
        for row in it:
            mark = self.size
            if n:
                self._put(",", 1)
            self._row(row)
            if n and self.size > max_bytes:
                self.size = mark  # keep it for the next chunk
                self.pending = row
                break
            self.rows += 1
            n += 1
            if n >= max_rows:
                break
        else:
            self.done = True
        return PyBytes_FromStringAndSize(self.buf, self.size)

    cdef inline int _put(self, const char* data, Py_ssize_t n) except -1:
        if self.size + n > self.cap:
            _grow(&self.buf, &self.cap, self.size + n)
        memcpy(self.buf + self.size, data, n)
        self.size += n
        return 0

    cdef int _row(self, object row) except -1:
        cdef Py_ssize_t i
        cdef Py_ssize_t n = self.ncols
        cdef bint is_tuple
        if not _is_row(row, n):
            row = _as_tuple(row, self.rows, n, self.error)
        is_tuple = PyTuple_CheckExact(row)
        self._put("(", 1)
        for i in range(n):
            if i:
                self._put(",", 1)
            self._value(i, _item(row, is_tuple, i, n, self.rows, <PyObject*>self.error))
        self._put(")", 1)
        return 0

    cdef int _value(self, int col, object v) except -1:
        cdef char tmp[64]
        cdef int n
        cdef long long x
        cdef double d
        cdef char* s
        if v is None:
            self._put("NULL", 4)
        elif v is True:
            self._put("1", 1)
        elif v is False:
            self._put("0", 1)
        elif PyLong_CheckExact(v):
            try:
                x = PyLong_AsLongLong(v)
            except OverflowError:
                data = str(v).encode()
                self._put(data, len(data))
                return 0
            n = snprintf(tmp, sizeof(tmp), "%lld", x)
            self._put(tmp, n)
        elif PyFloat_CheckExact(v):
            d = PyFloat_AS_DOUBLE(v)
            if d != d or d == float("inf") or d == -float("inf"):
                self._literal(col, v)  # mysqlclient refuses them: same error
                return 0
            s = PyOS_double_to_string(d, b"r", 0, Py_DTSF_ADD_DOT_0, NULL)
            try:
                n = len(<bytes>s)
                self._put(s, n)
                if b"e" not in <bytes>s:
                    self._put("e0", 2)
            finally:
                PyMem_Free(s)
        elif PyUnicode_CheckExact(v):
            if self.utf8:
                data = self.string_literal((<str>v).encode("utf-8"))
            else:
                data = self.string_literal(PyUnicode_AsEncodedString(v, self.encoding, NULL))
            self._put(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
        elif PyDateTime_Check(v) and type(v) is _datetime.datetime \
                and <object>PyDateTime_DATE_GET_TZINFO(v) is None:
            if PyDateTime_DATE_GET_MICROSECOND(v):
                n = snprintf(tmp, sizeof(tmp), "'%04d-%02d-%02d %02d:%02d:%02d.%06d'",
                             PyDateTime_GET_YEAR(v), PyDateTime_GET_MONTH(v),
                             PyDateTime_GET_DAY(v), PyDateTime_DATE_GET_HOUR(v),
                             PyDateTime_DATE_GET_MINUTE(v), PyDateTime_DATE_GET_SECOND(v),
                             PyDateTime_DATE_GET_MICROSECOND(v))
            else:
                n = snprintf(tmp, sizeof(tmp), "'%04d-%02d-%02d %02d:%02d:%02d'",
                             PyDateTime_GET_YEAR(v), PyDateTime_GET_MONTH(v),
                             PyDateTime_GET_DAY(v), PyDateTime_DATE_GET_HOUR(v),
                             PyDateTime_DATE_GET_MINUTE(v), PyDateTime_DATE_GET_SECOND(v))
            self._put(tmp, n)
        elif PyDate_CheckExact(v):
            n = snprintf(tmp, sizeof(tmp), "'%04d-%02d-%02d'", PyDateTime_GET_YEAR(v),
                         PyDateTime_GET_MONTH(v), PyDateTime_GET_DAY(v))
            self._put(tmp, n)
        else:
            self._literal(col, v)
        return 0

    cdef int _literal(self, int col, object v) except -1:
        try:
            data = self.fallback(v)
        except Exception as exc:
            raise self.error(self.rows, col, _rejected(v, exc), exc) from exc
        data = bytes(data)
        self._put(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
        return 0

# cython: language_level=3, binding=False
"""Reads a psycopg connection's transaction status in C, for the pool's core.

The pool reads libpq's transaction status on every lend and every return.
Through psycopg's ``pgconn.transaction_status`` a read costs a property call,
an int object and the libpq call (~80 instructions under callgrind); this
module's ``PGStatus(conn)`` hands the core a C function instead
(``__fastpool_status__``, see ``fastpool._core``): it loads the ``PGconn*``
that psycopg's compiled ``PGconn`` object holds and calls
``PQtransactionStatus`` itself (~25 instructions, no Python object).

``bind(library, pgconn)`` looks the function up at run time in the libpq
psycopg loaded (through psycopg's own extension ``library``, whose
dependencies are searched too: the system libpq for psycopg-c, the bundled
one for psycopg-binary), and finds where a ``PGconn`` object keeps its
pointer (the word equal to ``pgconn.pgconn_ptr``, checked again for every
connection). Without them (psycopg's pure-Python libpq wrapper, another
layout) ``bind`` returns False and the driver hands the core ``conn.pgconn``
as before. A connection psycopg has closed has no ``PGconn*``: the status
reads ``UNKNOWN`` (4), as libpq's own does.
"""

cimport cython
from cpython.object cimport PyObject
from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport uintptr_t

from fastpool._dl cimport loaded_symbol


ctypedef int (*status_fn_t)(void* pgconn) noexcept nogil

# libpq's PGTransactionStatusType
cdef enum:
    PQTRANS_IDLE = 0
    PQTRANS_UNKNOWN = 4

cdef status_fn_t _transaction_status = NULL
cdef Py_ssize_t _offset = -1
cdef object _pgconn_type = None


def bind(str library, pgconn) -> bool:
    """Find ``PQtransactionStatus`` through ``library`` (the path of
    psycopg's loaded ``pq`` extension) and where the live psycopg ``pgconn``'s
    object keeps its ``PGconn*``. True if both were found (once is enough)."""
    global _transaction_status, _offset, _pgconn_type
    cdef void* fn = loaded_symbol(library, b"PQtransactionStatus")
    if fn == NULL:
        return False
    ptr = getattr(pgconn, "pgconn_ptr", None)
    size = getattr(type(pgconn), "__basicsize__", 0)
    if not isinstance(ptr, int) or ptr == 0 or not isinstance(size, int):
        return False
    cdef uintptr_t want = <uintptr_t>ptr
    cdef char* base = <char*><PyObject*>pgconn
    cdef Py_ssize_t at, found = -1, hits = 0
    for at in range(sizeof(PyObject), size - <Py_ssize_t>sizeof(void*) + 1, sizeof(void*)):
        if (<uintptr_t*>(base + at))[0] == want:
            found = at
            hits += 1
    if hits != 1:
        return False
    if (<status_fn_t>fn)(<void*>want) != pgconn.transaction_status:
        return False
    _transaction_status = <status_fn_t>fn
    _offset = found
    _pgconn_type = type(pgconn)
    return True


def bound() -> bool:
    """Did ``bind`` succeed in this process?"""
    return _transaction_status != NULL


cdef inline void* _ptr_of(PyObject* pgconn) noexcept nogil:
    return (<void**>((<char*>pgconn) + _offset))[0]


cdef int _read(PyObject* obj) noexcept nogil:
    """The core's C reader (``__fastpool_status__``): libpq's status, 0 idle."""
    cdef void* conn = _ptr_of((<PGStatus>obj).pgconn)
    if conn == NULL:
        return PQTRANS_UNKNOWN
    return _transaction_status(conn)


@cython.final
cdef class PGStatus:
    """What the pool's core reads for one psycopg connection (sync or async).

    Keeps a reference to the connection (whose ``pgconn`` it reads, so that
    stays alive too); ``transaction_status`` is libpq's, as
    ``conn.pgconn.transaction_status`` reads it.
    """

    cdef PyObject* pgconn  # the connection's own, alive as long as it is
    cdef readonly object connection

    __fastpool_status__ = PyCapsule_New(<void*>_read, b"fastpool.status", NULL)

    def __cinit__(self, connection):
        if _transaction_status == NULL:
            raise RuntimeError("fastpool._pgstatus: bind() has not succeeded")
        pgconn = connection.pgconn
        if type(pgconn) is not _pgconn_type:
            raise TypeError(f"not a psycopg PGconn of the bound kind: {type(pgconn)!r}")
        ptr = pgconn.pgconn_ptr
        if <uintptr_t>_ptr_of(<PyObject*>pgconn) != <uintptr_t>(ptr or 0):
            raise TypeError("psycopg's PGconn keeps its pointer elsewhere than bind() found")
        self.pgconn = <PyObject*>pgconn
        self.connection = connection

    @property
    def transaction_status(self):
        """libpq's PGTransactionStatusType: 0 idle, 1 active, 2 in a
        transaction, 3 in a failed one, 4 unknown (closed)."""
        return _read(<PyObject*>self)

# cython: language_level=3, binding=False
"""Reads a mysqlclient connection's transaction state without a round trip.

mysqlclient exposes no transaction status, but ``conn._get_native_connection()``
returns a capsule holding the ``MYSQL*``, and MariaDB Connector/C's
``mariadb_get_info(mysql, MARIADB_CONNECTION_SERVER_STATUS, &flags)`` returns
the server status flags of the last reply, whose ``SERVER_STATUS_IN_TRANS``
bit is set exactly while a transaction is open. The function is looked up at
run time in the library mysqlclient itself loaded (``bind``), so fastpool
neither links against nor needs the headers of the client library, and a
mysqlclient built on Oracle's libmysqlclient (which lacks the function) simply
makes ``bind`` return False: the driver then rolls back on every return.

``fastpool.drivers._mysqlstatus_py`` is the ctypes twin of this module.
"""

cimport cython
from cpython.pycapsule cimport PyCapsule_GetPointer

from fastpool._dl cimport loaded_symbol


cdef extern from *:
    """
    #ifdef FASTPOOL_MYSQL_H
    #include <mysql.h>
    /* Built with MariaDB Connector/C's mysql.h: read the struct directly (three
       loads instead of two library calls), and see the client's own state too:
       a result not yet read to its end (an unbuffered cursor left half-read)
       leaves it out of MYSQL_STATUS_READY, which the server's flags (those of
       the last packet read) cannot tell. */
    static int fp_trans(void *m) {
        MYSQL *my = (MYSQL *)m;
        if (my->net.pvio == NULL) return 2;
        if (my->server_status & (SERVER_STATUS_IN_TRANS | SERVER_MORE_RESULTS_EXIST)) return 1;
        return my->status != MYSQL_STATUS_READY;
    }
    #define FP_SEES_UNREAD_RESULTS 1
    #else
    static int fp_trans(void *m) { (void)m; return -1; }
    #define FP_SEES_UNREAD_RESULTS 0
    #endif
    """
    int fp_trans(void* mysql) noexcept nogil
    int FP_SEES_UNREAD_RESULTS


ctypedef char (*get_info_t)(void* mysql, int value, void* arg) noexcept nogil

# enum mariadb_value in MariaDB Connector/C's mysql.h (append-only, so stable).
cdef enum:
    MARIADB_CONNECTION_SOCKET = 19
    MARIADB_CONNECTION_SERVER_STATUS = 30
    SERVER_STATUS_IN_TRANS = 1
    SERVER_MORE_RESULTS_EXIST = 8

#: ``ServerStatus.trans`` values.
IDLE = 0
IN_TRANSACTION = 1
BROKEN = 2

#: True when built with mysql.h, so that ``trans`` also sees a result left
#: unread (else only the server's flags: an open transaction, more results).
SEES_UNREAD_RESULTS = bool(FP_SEES_UNREAD_RESULTS)

cdef get_info_t _get_info = NULL
_CAPSULE_NAME = b"_mysql.connection.native_connection"


def bind(str library):
    """Find ``mariadb_get_info`` through ``library`` (mysqlclient's loaded
    ``_mysql`` extension, whose dependencies are searched too). True if found."""
    global _get_info
    cdef void* fn = loaded_symbol(library, b"mariadb_get_info")
    if fn == NULL:
        return False
    _get_info = <get_info_t>fn
    return True


@cython.final
cdef class ServerStatus:
    """The local view of one mysqlclient connection's state.

    Keeps a reference to the connection: the ``MYSQL`` struct lives inside it.
    """

    cdef void* mysql
    cdef readonly object connection

    def __cinit__(self, connection):
        if _get_info == NULL:
            raise RuntimeError("fastpool._mysqlstatus: bind() found no mariadb_get_info")
        capsule = connection._get_native_connection()
        self.mysql = PyCapsule_GetPointer(capsule, _CAPSULE_NAME)
        self.connection = connection

    @property
    def trans(self):
        """0 idle; 1 not idle (a transaction open, more results pending, a
        result unread); 2 broken (the client dropped the socket)."""
        cdef unsigned int flags = 0
        cdef int sock = -1
        cdef int state
        if FP_SEES_UNREAD_RESULTS:
            state = fp_trans(self.mysql)
            return IDLE if state == 0 else (IN_TRANSACTION if state == 1 else BROKEN)
        if _get_info(self.mysql, MARIADB_CONNECTION_SOCKET, &sock) or sock < 0:
            return BROKEN
        if _get_info(self.mysql, MARIADB_CONNECTION_SERVER_STATUS, &flags):
            return BROKEN
        if flags & (SERVER_STATUS_IN_TRANS | SERVER_MORE_RESULTS_EXIST):
            return IN_TRANSACTION
        return IDLE

    @property
    def socket(self):
        """The connection's socket descriptor, -1 once the client dropped it."""
        cdef int sock = -1
        if _get_info(self.mysql, MARIADB_CONNECTION_SOCKET, &sock):
            return -1
        return sock

"""The ctypes twin of ``fastpool._mysqlstatus`` (same API, ~1 µs per read).

Used when the compiled module is not built or ``FASTPOOL_IMPL=python``.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

_MARIADB_CONNECTION_SOCKET = 19
_MARIADB_CONNECTION_SERVER_STATUS = 30
_SERVER_STATUS_IN_TRANS = 1
_CAPSULE_NAME = b"_mysql.connection.native_connection"

_SERVER_MORE_RESULTS_EXIST = 8

IDLE = 0
IN_TRANSACTION = 1
BROKEN = 2
#: ctypes cannot read the client's own state: a half-read result goes unseen.
SEES_UNREAD_RESULTS = False

# my_socket: int on POSIX, SOCKET (pointer-sized, INVALID_SOCKET = ~0) on Windows.
_SOCKET_T: Any = ctypes.c_size_t if sys.platform == "win32" else ctypes.c_int
_INVALID = (1 << (8 * ctypes.sizeof(ctypes.c_size_t))) - 1 if sys.platform == "win32" else -1

_get_info: Any = None
_get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_get_pointer.restype = ctypes.c_void_p
_get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


def bind(library: str) -> bool:
    global _get_info
    try:
        fn = ctypes.CDLL(library).mariadb_get_info
    except (OSError, AttributeError):
        return False
    fn.restype = ctypes.c_char
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    _get_info = fn
    return True


class ServerStatus:
    __slots__ = ("_mysql", "connection")

    def __init__(self, connection: Any) -> None:
        if _get_info is None:
            raise RuntimeError("fastpool._mysqlstatus: bind() found no mariadb_get_info")
        self._mysql = ctypes.c_void_p(_get_pointer(connection._get_native_connection(),
                                                   _CAPSULE_NAME))
        self.connection = connection

    @property
    def trans(self) -> int:
        if self.socket < 0:
            return BROKEN
        flags = ctypes.c_uint(0)
        if _get_info(self._mysql, _MARIADB_CONNECTION_SERVER_STATUS,
                     ctypes.byref(flags)) != b"\0":
            return BROKEN
        busy = _SERVER_STATUS_IN_TRANS | _SERVER_MORE_RESULTS_EXIST
        return IN_TRANSACTION if flags.value & busy else IDLE

    @property
    def socket(self) -> int:
        sock = _SOCKET_T(_INVALID)
        if _get_info(self._mysql, _MARIADB_CONNECTION_SOCKET, ctypes.byref(sock)) != b"\0" \
                or sock.value == _INVALID:
            return -1
        return int(sock.value)

"""Leak detection: where was a connection that is held too long acquired?

Only active when a pool has ``leak_threshold``: then every acquisition records
a cheap stack (code objects and line numbers, no source lines and no frame
references, so nothing stays alive), formatted only if the connection is
reported. With leak detection off, the core never calls in here.
"""

from __future__ import annotations

import asyncio
import gc
import linecache
import os
import socket
import sys
import types
from collections.abc import Callable, Mapping
from types import CodeType, FrameType

Holder = tuple[tuple[CodeType, int], ...]

# Frames anywhere in fastpool (any subpackage) are not the acquire site.
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_FRAMES = 32


def capture_stack() -> Holder:
    """The caller's stack outside fastpool, innermost first."""
    frame: FrameType | None = sys._getframe(1)
    frames: list[tuple[CodeType, int]] = []
    while frame is not None and len(frames) < MAX_FRAMES:
        code = frame.f_code
        if not frames and code.co_filename.startswith(_PACKAGE_DIR):
            frame = frame.f_back  # skip fastpool's own frames at the top
            continue
        frames.append((code, frame.f_lineno))
        frame = frame.f_back
    return tuple(frames)


def capture_task_stack(task_name: str) -> tuple[object, ...]:
    """``capture_stack()`` in an asyncio task, led by the task's name: a
    coroutine's stack runs from the task's step down to the acquire site."""
    return (task_name, *capture_stack())


def _split(holder: object) -> tuple[str | None, Holder]:
    if not isinstance(holder, tuple) or not holder:
        return None, ()
    if isinstance(holder[0], str):
        return holder[0], holder[1:]
    return None, holder


def format_stack(holder: object) -> str:
    """A traceback-style text of a captured stack, outermost call first."""
    task, frames = _split(holder)
    if not frames:
        return "  (acquisition site not recorded)"
    lines = [f"  in asyncio task {task!r}"] if task is not None else []
    for code, lineno in reversed(frames):
        lines.append(f'  File "{code.co_filename}", line {lineno}, in {code.co_name}')
        source = linecache.getline(code.co_filename, lineno).strip()
        if source:
            lines.append(f"    {source}")
    return "\n".join(lines)


def acquire_site(holder: object) -> str | None:
    """``file:line in function`` of the innermost recorded frame, for monitoring."""
    _, frames = _split(holder)
    if not frames:
        return None
    code, lineno = frames[0]
    return f"{code.co_filename}:{lineno} in {code.co_name}"


# ---- reclaiming connections dropped without a release ------------------------
#
# A lent connection whose borrower let go of it (returned early, an exception
# path that skipped release(), a task cancelled) is kept alive by the pool's own
# references only, so nothing would ever collect it. The worker finds such a
# connection by counting references: the pool's own (the core's list of
# connections, its index, the status source it reads) are known; what is left
# must be explained by the connection's own private object graph (sqlite3's
# statement cache, PyMySQL's last result, a wrapper stored on the connection
# that points back at it), or a borrower still holds it. Every rule below errs
# the same way: whatever cannot be explained counts as a borrower, so an
# unexplained reference keeps the connection lent, never the other way round.

def _local_refs() -> int:
    probe = object()
    return sys.getrefcount(probe)


#: What ``sys.getrefcount(x)`` reports for an object held by one local
#: variable only (the variable and the call's argument: 2 up to Python 3.13).
LOCAL_REFS = _local_refs()

#: Objects never expanded while looking for a connection's private references:
#: whatever they hold counts as held from outside. Frames, coroutines, tasks
#: and futures lead to borrowers' stacks; types and modules to everything.
_OPAQUE = (type, types.ModuleType, types.FrameType, types.CodeType, types.GeneratorType,
           types.CoroutineType, types.AsyncGeneratorType, asyncio.Future)

#: At most this many objects of a connection's graph are examined per check;
#: a larger graph is cut off there, and the rest counts as outside references.
MAX_OBJECTS = 512


def _referents(obj: object) -> list[object]:
    if isinstance(obj, types.FunctionType):
        # A function's globals and builtins are the module's, not the connection's.
        outer = (obj.__globals__, getattr(obj, "__builtins__", None))
        return [r for r in gc.get_referents(obj) if not any(r is o for o in outer)]
    return gc.get_referents(obj)


def private_refs(conn: object, credit: Mapping[int, int]) -> int:
    """How many references to ``conn`` come from its own private objects.

    The objects reachable from ``conn`` (up to MAX_OBJECTS, not entering
    ``_OPAQUE`` ones) are examined as a garbage collector would: an object that
    is referred to from outside this graph (beyond ``credit[id(obj)]``
    references the pool holds to it) is held from outside, and so is every
    object it reaches without passing through ``conn``. The references to
    ``conn`` from the rest, the objects only ``conn`` keeps alive, are
    returned. The caller compares ``conn``'s own count with it.
    """
    members: list[object] = [conn]
    index: dict[int, int] = {id(conn): 0}
    edges: list[list[int]] = []
    i = 0
    while i < len(members):
        obj = members[i]
        out: list[int] = []
        for ref in _referents(obj):
            j = index.get(id(ref))
            if j is None:
                if (len(members) >= MAX_OBJECTS or not gc.is_tracked(ref)
                        or isinstance(ref, _OPAQUE)):
                    continue  # not examined: what it holds counts as outside
                j = index[id(ref)] = len(members)
                members.append(ref)
            out.append(j)
        edges.append(out)
        i += 1
    obj = ref = None  # from here on, the only references held here are the list's
    inside = [0] * len(members)
    for out in edges:
        for j in out:
            inside[j] += 1
    # References from outside the graph: the count less this function's own
    # (the list entry, the loop variable and the call's argument), the
    # pool's, and those from inside.
    held = [False] * len(members)
    stack: list[int] = []
    for j in range(1, len(members)):
        item = members[j]
        outside = (sys.getrefcount(item) - LOCAL_REFS - 1
                   - credit.get(id(item), 0) - inside[j])
        item = None
        if outside > 0:
            held[j] = True
            stack.append(j)
    while stack:  # what an outside reference reaches, not passing through conn
        for j in edges[stack.pop()]:
            if j and not held[j]:
                held[j] = True
                stack.append(j)
    return sum(1 for j in range(1, len(members)) if not held[j]
               for k in edges[j] if k == 0)



def socket_of(conn: object) -> socket.socket | None:
    """A duplicate of ``conn``'s socket (``conn.fileno()``: psycopg,
    mysqlclient), for ``interrupt``; None without one. Taken before the call
    to interrupt starts: mysqlclient refuses ``fileno()`` while another thread
    is in a call, and the duplicate stays this socket even if the client
    closes its own descriptor meanwhile (close it when done)."""
    fileno = getattr(conn, "fileno", None)
    try:
        fd = fileno() if callable(fileno) else -1
        if isinstance(fd, int) and fd >= 0:
            return socket.socket(fileno=os.dup(fd))
    except Exception:  # OSError: not a socket; a client's own error
        pass
    return None


def interrupt(sock: socket.socket | None, conn: object,
              abandon: Callable[[object], object] | None = None) -> bool:
    """Make a call blocked on ``conn``'s server fail now (a reclaimed
    connection's rollback that got no answer, see ``PoolPolicy.RESET_TIMEOUT``):
    shut its socket down (``sock``, from ``socket_of``), so that the blocked
    read sees the end of the stream and fails and the return discards the
    connection as after any failed rollback. Without a socket,
    ``abandon(conn)`` (an asyncio client's close that awaits nothing:
    asyncpg's ``terminate``, asyncmy's ``close``). True if either ran."""
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
            return True
        except OSError:
            pass
    if abandon is not None:
        try:
            abandon(conn)
            return True
        except Exception:
            pass
    return False

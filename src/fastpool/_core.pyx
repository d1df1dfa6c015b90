# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: binding=False
"""fastpool's compiled core: the mechanism under the pool's Python policy.

It holds the ring of idle connection slots, the FIFO queue of waiters with the
hand-off handshake, the per-slot numbers the policy checks (generation, pid,
lifetime deadline, last use) and the uint64 counters and log2 histograms.
It imports no driver and does no logging, I/O, sleeping or timeout policy:
whenever a decision needs more than comparing numbers, it calls a method the
pool's policy provides (``_acquire_slow``, ``_release_slow``,
``_release_unknown``, ``_capture_holder``: declared here as cpdef methods,
overridden by the policy class that is combined with this one).

Every method runs under the GIL without calling back into Python in the middle
of a state change, so each one is atomic with respect to other threads.
``fastpool._core_py`` is a pure-Python twin with the same API.
"""

cimport cython
from cpython.exc cimport PyErr_Clear
from cpython.number cimport PyNumber_Index
from cpython.object cimport PyObject
from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_IsValid
from cpython.pythread cimport PyThread_get_thread_ident
from libc.stdint cimport INT64_MAX, INT64_MIN, int64_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

import os
from types import GeneratorType as _GeneratorType

from fastpool.errors import ConfigError, ConnectionAlreadyReleased

__impl__ = "compiled"

cdef extern from "Python.h":
    # Declared without exception handling: NULL / -1 are checked by hand on
    # the hot path instead of paying for a try/except block.
    PyObject* PyObject_GetAttr_raw "PyObject_GetAttr" (object o, object name)
    int PyObject_RichCompareBool_raw "PyObject_RichCompareBool" (
        PyObject* a, PyObject* b, int op)
    void Py_DECREF_raw "Py_DECREF" (PyObject* o)
    PyObject* PyDict_GetItemWithError_raw "PyDict_GetItemWithError" (object d, object key)
    PyObject* PyList_GET_ITEM_raw "PyList_GET_ITEM" (object list, Py_ssize_t i)
    int Py_EQ

cdef extern from *:
    """
    /* Vectorcall for ConnectionContext (see its docstring): the `with`
       statement calls __exit__ with three arguments, which without
       vectorcall costs a tuple per block. */
    static PyObject* (*fp_ctx_impl)(PyObject*, Py_ssize_t, PyObject**);
    static PyObject* fp_ctx_vectorcall(PyObject* self, PyObject* const* args,
                                       size_t nargsf, PyObject* kwnames) {
        if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0) {
            PyErr_SetString(PyExc_TypeError, "ConnectionContext takes no keyword arguments");
            return NULL;
        }
        return fp_ctx_impl(self, PyVectorcall_NARGS(nargsf), (PyObject**)args);
    }
    static void fp_enable_vectorcall(PyObject* type, Py_ssize_t offset) {
        ((PyTypeObject*)type)->tp_vectorcall_offset = offset;
        ((PyTypeObject*)type)->tp_flags |= Py_TPFLAGS_HAVE_VECTORCALL;
    }
    static inline int fp_bit_length(unsigned long long v) {
        return v ? 64 - __builtin_clzll(v) : 0;
    }
    /* Call a data descriptor's __get__ directly: what getattr() ends up
       doing, minus the type and MRO lookups. NULL with an exception set on
       failure. */
    static inline PyObject* fp_descr_get(PyObject* descr, PyObject* obj) {
        return Py_TYPE(descr)->tp_descr_get(descr, obj, (PyObject*)Py_TYPE(obj));
    }
    /* The C function behind a getset descriptor (a C type's property: libpq's
       pgconn.transaction_status, sqlite3's in_transaction): what its
       __get__ calls after checking the instance's type, which the caller has
       checked already. NULL for any other descriptor. */
    typedef PyObject* (*fp_getter_t)(PyObject*, void*);
    static inline void* fp_getset_getter(PyObject* descr, void** closure) {
        PyGetSetDef* def;
        if (Py_TYPE(descr) != &PyGetSetDescr_Type) return NULL;
        def = ((PyGetSetDescrObject*)descr)->d_getset;
        if (def->get == NULL) return NULL;
        *closure = def->closure;
        return (void*)def->get;
    }
    /* Read the status attribute of `obj`, an instance of the learnt type. */
    static inline PyObject* fp_get_status(void* getter, void* closure,
                                          PyObject* descr, PyObject* obj) {
        if (getter != NULL) return ((fp_getter_t)getter)(obj, closure);
        return fp_descr_get(descr, obj);
    }
    /* A status source's own C reader (see _learn_status_type): 0 idle. */
    typedef int (*fp_status_cfn_t)(PyObject*);
    static inline int fp_call_cfn(void* fn, PyObject* obj) {
        return ((fp_status_cfn_t)fn)(obj);
    }
    static inline int fp_type_is(PyObject* obj, PyObject* type) {
        return (PyObject*)Py_TYPE(obj) == type;
    }
    """
    int fp_bit_length(unsigned long long v) nogil
    ctypedef object (*ctx_impl_t)(object, Py_ssize_t, PyObject**)
    ctx_impl_t fp_ctx_impl
    void* fp_ctx_vectorcall
    void fp_enable_vectorcall(object type, Py_ssize_t offset)
    PyObject* fp_descr_get(PyObject* descr, PyObject* obj)
    void* fp_getset_getter(PyObject* descr, void** closure)
    PyObject* fp_get_status(void* getter, void* closure, PyObject* descr, PyObject* obj)
    int fp_type_is(PyObject* obj, PyObject* type)
    int fp_call_cfn(void* fn, PyObject* obj) noexcept

# Slot states.
cdef enum:
    FREE = 0
    IDLE = 1
    IN_USE = 2
    CHECKING = 3
    RELEASING = 4

# Waiter states.
cdef enum:
    W_NEW = 0
    W_WAITING = 1
    W_GIVEN = 2
    W_CANCELLED = 3
    W_CLOSED = 4
    W_FAILED = 5

# Constants shared with the policy: C values on the hot path (`cpdef enum`
# also exports each one as a module-level int).

# What `_pop_or_wait` returns when it did not pop a slot.
cpdef enum:
    ENQUEUED = -1
    REJECTED = -2
    POOL_CLOSED = -3

# The longest wait a caller may ask for, in seconds (about 31 years).
cdef double _MAX_TIMEOUT = 1e9
MAX_TIMEOUT = _MAX_TIMEOUT

# Verdicts on a slot, from `_verdict`. The policy acts on anything but OK.
cpdef enum:
    OK = 0
    PROBE = 1
    EXPIRED = 2
    STALE = 3
    FORKED = 4
    CLOSED = 5
    OVERSIZE = 6
    DIRTY = 7
    SLOW = 8
    IDLE_TOO_LONG = 9

# Why a connection was closed: index into the per-reason counters.
CLOSE_REASONS = ("lifetime", "idle", "broken", "reset", "fork", "drained",
                 "closed", "resize")
cpdef enum:
    REASON_LIFETIME = 0
    REASON_IDLE = 1
    REASON_BROKEN = 2
    REASON_RESET = 3
    REASON_FORK = 4
    REASON_DRAINED = 5
    REASON_CLOSED = 6
    REASON_RESIZE = 7

# Counters, in order; `_count` takes these indices.
COUNTER_NAMES = ("acquisitions", "releases", "waits", "timeouts", "rejected",
                 "opened", "probes", "probe_ns", "leaks", "handoffs", "dirty_on_lend")
cpdef enum:
    C_ACQUIRED = 0
    C_RELEASED = 1
    C_WAITS = 2
    C_TIMEOUTS = 3
    C_REJECTED = 4
    C_OPENED = 5
    C_PROBES = 6
    C_PROBE_NS = 7
    C_LEAKS = 8
    C_HANDOFFS = 9
    C_DIRTY_ON_LEND = 10

WAITER_STATES = ("new", "waiting", "given", "cancelled", "closed", "failed")
SLOT_STATES = ("free", "idle", "in_use", "checking", "releasing")


cdef inline int64_t _now() noexcept nogil:
    # CLOCK_MONOTONIC, the clock of time.monotonic_ns() on Linux. The core
    # reads it through PoolCore._clock_ns (a test may inject another clock);
    # the policy's timestamps (created_ns, deadlines) come from _now_ns().
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef inline int64_t _shifted(int64_t t, int64_t shift) noexcept:
    """``t + shift``, saturating (a "never" deadline stays far away)."""
    if shift > 0 and t > INT64_MAX - shift:
        return INT64_MAX
    if shift < 0 and t < INT64_MIN - shift:
        return INT64_MIN
    return t + shift


cdef inline void _hist_add(Histogram* h, int64_t value) noexcept:
    cdef uint64_t v = <uint64_t>value if value > 0 else 0
    h.buckets[fp_bit_length(v) & 63] += 1
    h.count += 1
    h.total += v
    if v > h.max:
        h.max = v


cdef object _hist_export(Histogram* h):
    return {
        "buckets": [h.buckets[i] for i in range(N_BUCKETS)],
        "count": h.count,
        "total": h.total,
        "max": h.max,
    }


cdef class Waiter:
    """One caller queued for a connection.

    ``wakeup`` is called (once, without arguments) when the waiter's fate is
    decided: it was given a slot, or the pool closed or failed. It is opaque to
    the core: a thread passes a lock's ``release``; an event loop can pass a
    function that resolves a future thread-safely.
    """

    def __cinit__(self, wakeup):
        self.wakeup = wakeup
        self.state = W_NEW
        self.idx = -1
        self.holder = None  # where the caller waits from, recorded at hand-off
        # The policy's own: the wait's token (an event loop's future) and the
        # caller's deadline, for its _after_wait.
        self.token = None
        self.limits = None

    @property
    def state_name(self):
        return WAITER_STATES[self.state]


@cython.final
cdef class _SpecialMethod:
    """``__enter__``/``__exit__`` of ConnectionContext without a bound method.

    A ``with`` statement looks both methods up on the type and binds them to
    the instance: two bound-method objects allocated and freed per block,
    which is most of the cost of ``with pool.connection()``. This descriptor
    binds to the context object itself instead: the context is callable, with
    no arguments it enters, with three it exits. On the class (``type(cm).
    __enter__``, as contextlib.ExitStack does) it is a plain function.
    """

    cdef object unbound

    def __cinit__(self, unbound):
        self.unbound = unbound

    def __get__(self, instance, owner):
        return self.unbound if instance is None else instance


cdef object _ENTERING = object()


def _context_enter(ConnectionContext cm):
    return cm._enter()


def _context_exit(ConnectionContext cm, et, ev, tb):
    return cm._exit(et)


cdef object _context_call(object cm, Py_ssize_t nargs, PyObject** args):
    """The vectorcall body of ConnectionContext: no argument tuple is built."""
    if nargs == 0:
        return (<ConnectionContext>cm)._enter()
    if nargs == 3:
        return (<ConnectionContext>cm)._exit(<object>args[0])
    raise TypeError("ConnectionContext is entered with `with`, not called")


@cython.final
@cython.freelist(16)
@cython.no_gc
cdef class ConnectionContext:
    """``with pool.connection() as conn``: commit on success, roll back on error."""

    __enter__ = _SpecialMethod(_context_enter)
    __exit__ = _SpecialMethod(_context_exit)

    def __call__(self, *args):
        # Reached through _SpecialMethod: () is __enter__, (et, ev, tb) __exit__.
        # (Vectorcall normally takes this path: see _context_call.)
        if len(args) == 0:
            return self._enter()
        if len(args) == 3:
            return self._exit(args[0])
        raise TypeError("ConnectionContext is entered with `with`, not called")

    cdef object _enter(self):
        if self.pool is None:
            raise TypeError("ConnectionContext objects come from pool.connection()")
        if self.conn is not None:
            raise RuntimeError("this pool.connection() context is already entered")
        # Claimed before acquiring: acquire may block, and a second thread
        # entering the same object meanwhile must be refused too.
        self.conn = _ENTERING
        try:
            self.conn = self.pool._acquire(self.timeout)
        except BaseException:
            self.conn = None
            raise
        return self.conn

    cdef object _exit(self, object et):
        conn = self.conn
        if conn is not None and conn is not _ENTERING:
            self.conn = None
            self.pool._release(conn, et is None)
        return False


@cython.final
@cython.freelist(16)
cdef class AsyncConnectionContext:
    """``async with pool.connection() as conn`` of an asyncio pool: commit on
    success, roll back on an exception or a cancellation."""

    async def __aenter__(self):
        if self.pool is None:
            raise TypeError("AsyncConnectionContext objects come from pool.connection()")
        if self.conn is not None:
            raise RuntimeError("this pool.connection() context is already entered")
        self.conn = _ENTERING
        # acquire_async's body, inlined: one coroutine per block, not two.
        pool = self.pool
        try:
            if pool._off_owner():
                pool._off_loop()
            conn = pool._acquire(self.timeout)
            if type(conn) is Waiter:  # queued (see acquire_async)
                waiter = conn
                try:
                    woken = (<Waiter>waiter).token  # an awaitable, or the wait's result
                    if type(woken) is not bool:
                        woken = await woken
                    conn = pool._after_wait(waiter, woken)
                except BaseException:
                    pool._abandon_wait(waiter)  # nothing left to undo if _after_wait raised
                    raise
            elif type(conn) is _GeneratorType:
                conn = await pool._acquire_later(conn)
            self.conn = conn
        except BaseException:
            self.conn = None
            raise
        return conn

    async def __aexit__(self, et, ev, tb):
        conn = self.conn
        if conn is not None and conn is not _ENTERING:
            self.conn = None
            # _release_async's body, inlined (see release_async).
            pool = self.pool
            if pool._off_owner():
                pool._off_loop()
            # A block ended by an exception returns through the policy: the
            # error may have broken the connection in a way its client sees
            # only once the loop has run (a server's last words, then EOF).
            pool._release(conn, et is None, et is not None)
            if pool.later is not None:
                await pool._release_later(pool._take_later())
        return False


cdef class PoolCore:
    """The compiled mechanism of a pool. Subclassed by ``fastpool.Pool``."""

    def __cinit__(self, *args, **kwargs):
        self.slots = NULL
        self.ring = NULL
        self.cap = 0
        self.lifo = True
        self.conns = []
        self.status_srcs = []
        self.holders = []
        self.index = {}
        self.max_open = 0
        self.bypass_ns = 0
        self.pid = os.getpid()
        self.generation = 1
        self.status_attr = None
        self.idle_status = None
        self.clock = None
        now = _now()
        self.open_mark_ns = now
        self.window_start_ns = now

    def __dealloc__(self):
        free(self.slots)
        free(self.ring)

    # ---- hot path -------------------------------------------------------

    def acquire(self, timeout=None):
        """Borrow a connection; wait up to ``timeout`` seconds (default: the pool's)."""
        return self._acquire(timeout)

    def release(self, conn):
        """Give back a connection obtained from ``acquire()``."""
        self._release(conn, False)

    # ---- the asyncio front end's hot path ----------------------------------
    # Coroutines compiled like the rest: the idle ring in C; the policy's slow
    # paths are awaited through its _acquire_later / _release_later /
    # _off_loop (see fastpool.pool.aio).

    async def acquire_async(self, timeout=None):
        """``await pool.acquire()``: the fast path here. A slow path comes back
        from the policy's ``_acquire_slow`` as a queued Waiter, whose token (a
        future of the loop) is awaited here, its end decided by the policy's
        ``_after_wait`` (``_abandon_wait`` when interrupted); or as a flow (a
        generator) to await through ``_acquire_later``."""
        if self._off_owner():
            self._off_loop()
        conn = self._acquire(timeout)
        if type(conn) is Waiter:
            waiter = conn
            try:
                woken = (<Waiter>waiter).token  # an awaitable, or the wait's result
                if type(woken) is not bool:
                    woken = await woken
                conn = self._after_wait(waiter, woken)
            except BaseException:
                self._abandon_wait(waiter)  # nothing left to undo if _after_wait raised
                raise
            return conn
        if type(conn) is _GeneratorType:
            conn = await self._acquire_later(conn)
        return conn

    async def release_async(self, conn):
        """``await pool.release(conn)``."""
        # _release_async's body, inlined: a second coroutine (and a Python
        # method call to create it) cost ~40% of an uncontended cycle.
        if self._off_owner():
            self._off_loop()
        self._release(conn, False)
        if self.later is not None:
            await self._release_later(self._take_later())

    async def _release_async(self, conn, bint commit, bint slow=False):
        if self._off_owner():
            self._off_loop()
        self._release(conn, commit, slow)
        if self.later is not None:
            await self._release_later(self._take_later())

    def connection_async(self, timeout=None):
        """``async with pool.connection() as conn`` of an asyncio pool."""
        cdef AsyncConnectionContext ctx = AsyncConnectionContext.__new__(AsyncConnectionContext)
        ctx.pool = self
        ctx.timeout = timeout
        return ctx

    def _set_owner(self, unsigned long thread, loop=None):
        """The thread whose event loop ``loop`` owns the pool (0: none; every
        async call then goes to the policy's ``_off_loop``, as does a call
        while ``loop`` is not running: another loop runs in that thread)."""
        self.owner_thread = thread
        self.owner_loop = loop
        self.owner_loop_tid = loop is not None and hasattr(loop, "_thread_id")

    cdef bint _off_owner(self) except -1:
        """Is the caller off the owner's thread or its loop not running?"""
        if self.owner_thread != PyThread_get_thread_ident():
            return True
        if self.owner_loop is None:
            return False
        if self.owner_loop_tid:  # asyncio's loops: set only while running
            return self.owner_loop._thread_id is None
        return not self.owner_loop.is_running()  # uvloop and others

    def _set_later(self, later):
        """What ``release_async`` must await once the core is done (the
        policy's slow release, running as a task)."""
        self.later = later

    cdef object _take_later(self):
        later = self.later
        self.later = None
        return later

    def _release_ended(self, conn, bint commit):
        """Give back ``conn`` at the end of a block: ``commit`` when it ended
        without an exception (an open transaction is then committed, as by
        ``with pool.connection()``). For front ends other than ``with``."""
        self._release(conn, commit)

    def connection(self, timeout=None):
        """A context manager lending a connection: commit on success, roll back on error."""
        cdef ConnectionContext ctx = ConnectionContext.__new__(ConnectionContext)
        ctx.vectorcall = fp_ctx_vectorcall
        ctx.pool = self
        ctx.timeout = timeout
        return ctx

    cdef object _acquire(self, object timeout):
        cdef int idx
        cdef int64_t now
        cdef Slot* s
        if timeout is not None and not (
                (type(timeout) is float or type(timeout) is int)
                and 0 <= timeout <= _MAX_TIMEOUT):
            # Anything unusual (a bool, a negative or non-number): let the
            # policy raise its clear error.
            return self._acquire_slow(timeout, -1)
        # Read before anything changes: an injected clock runs Python code
        # (which may raise, or let another thread take the last idle slot).
        now = self._clock_ns()
        if self.ring_count > 0 and not self.closed:
            idx = self._ring_pop()
            s = &self.slots[idx]
            s.state = CHECKING
            # The status last: reading it may run Python code (and move
            # self.slots: `s` is not used after it). A connection written
            # through a stale reference while it sat idle reads busy here.
            if (s.generation == self.generation and s.pid == self.pid
                    and now < s.deadline_ns and now - s.last_used_ns <= self.bypass_ns
                    and self.n_open <= self.max_open
                    and (not self.lend_check or self._status_idle(idx))):
                if not self.track_holders:
                    return self._lend(idx, now, 0)
                return self._lend_with_holder(idx, now)
            return self._acquire_slow(timeout, idx)
        return self._acquire_slow(timeout, -1)

    cdef object _lend_with_holder(self, int idx, int64_t now):
        """Lend after recording where it was acquired (leak detection on).

        The stack is captured before lending: if that is interrupted, the
        slot goes back into service instead of being lent to nobody.
        """
        try:
            holder = self._capture_holder()
        except BaseException:
            self._put(idx, now)
            raise
        conn = self._lend(idx, now, 0)
        self.holders[idx] = holder
        return conn

    cdef inline object _lend(self, int idx, int64_t now, int64_t wait_ns):
        cdef Slot* s = &self.slots[idx]
        s.state = IN_USE
        s.acquired_ns = now
        s.leak_reported = 0
        self.n_in_use += 1
        self.counters[C_ACQUIRED] += 1
        _hist_add(&self.wait_hist, wait_ns)
        return self.conns[idx]

    cdef int _release(self, object conn, bint commit, bint slow=False) except -1:
        # The clock first, as in _acquire: nothing may run between the state
        # check below and marking the slot RELEASING.
        cdef int64_t now = self._clock_ns()
        cdef int idx = self._slot_index(conn)
        cdef Slot* s
        if idx < 0:
            self._release_unknown(conn)
            return 0
        s = &self.slots[idx]
        if self.conns[idx] is not conn:
            # Equal to one of ours but not the same object.
            self._release_unknown(conn)
            return 0
        if s.state != IN_USE:
            raise ConnectionAlreadyReleased(
                "connection %r was already released to this pool" % (conn,))
        # Mark it first: reading the status may run Python code (and switch
        # threads), and a concurrent double release must see it gone.
        s.state = RELEASING
        if not slow and self._clean(idx, now):
            self._end_hold(idx, now)
            self._put(idx, now)
        else:
            self._release_slow(idx, commit)
        return 0

    cdef inline int _slot_index(self, object conn) except -2:
        cdef PyObject* found = PyDict_GetItemWithError_raw(self.index, conn)
        if found == NULL:
            # Not ours, or unhashable (then certainly not ours either).
            PyErr_Clear()
            return -1
        return <int>(<object>found)

    cdef inline bint _clean(self, int idx, int64_t now) noexcept:
        """Can this returning connection go straight back to the ring?"""
        cdef Slot* s
        # The status first: reading it may run Python code and let another
        # thread close or drain the pool, so the numbers are checked after it
        # (and the slot pointer taken after it: an _add meanwhile may move them).
        if self.always_slow_release or not self._status_idle(idx):
            return False
        s = &self.slots[idx]
        return not (self.closed or s.generation != self.generation or s.pid != self.pid
                    or now >= s.deadline_ns or self.n_open > self.max_open)

    cdef inline bint _status_idle(self, int idx) noexcept:
        """Does the driver's own attribute say no transaction is open?"""
        # Read on every lend and every return: each step here is counted
        # (benchmarks/instructions.py). The list's reference to the source is
        # enough: the slot is the caller's, nothing replaces it meanwhile.
        cdef PyObject* src = PyList_GET_ITEM_raw(self.status_srcs, idx)
        cdef PyObject* status
        cdef int same
        if fp_type_is(src, <PyObject*>self.status_type):
            if self.status_cfn != NULL:
                return fp_call_cfn(self.status_cfn, src) == 0
            status = fp_get_status(self.status_get, self.status_closure,
                                   <PyObject*>self.status_descr, src)
        else:
            if src == <PyObject*>None:
                return False
            self._learn_status_type(<object>src)
            status = PyObject_GetAttr_raw(<object>src, self.status_attr)
        if status == NULL:
            # A closed or broken connection: let the policy decide.
            PyErr_Clear()
            return False
        if status == <PyObject*>self.idle_status:
            same = 1
        else:
            same = PyObject_RichCompareBool_raw(status, <PyObject*>self.idle_status, Py_EQ)
            if same < 0:
                PyErr_Clear()
                same = 0
        Py_DECREF_raw(status)
        return same == 1

    cdef int _learn_status_type(self, object src) except -1:
        """Remember the data descriptor behind ``status_attr`` on ``type(src)``.

        Calling it directly skips getattr's type and MRO lookups; a data
        descriptor wins over any instance attribute, so this is exactly what
        getattr would return. Anything else keeps the plain getattr.
        """
        descr = None
        self.status_cfn = NULL
        # A compiled status source may offer a C function reading its status
        # without a Python object per read: ``type(src).__fastpool_status__``,
        # a capsule named "fastpool.status" holding ``int read(PyObject* src)``
        # that returns 0 exactly when ``status_attr`` reads ``idle_status``
        # (fastpool._pgstatus.PGStatus, for psycopg).
        reader = getattr(type(src), "__fastpool_status__", None)
        if reader is not None and PyCapsule_IsValid(reader, b"fastpool.status"):
            self.status_cfn = PyCapsule_GetPointer(reader, b"fastpool.status")
            self.status_type = type(src)
            self.status_descr = None
            self.status_get = NULL
            return 0
        try:
            for klass in type(src).__mro__:
                found = klass.__dict__.get(self.status_attr)
                if found is not None:
                    if hasattr(type(found), "__get__") and hasattr(type(found), "__set__"):
                        descr = found
                    break
        except Exception:
            descr = None
        self.status_type = type(src) if descr is not None else None
        self.status_descr = descr
        self.status_get = NULL
        if descr is not None:
            self.status_get = fp_getset_getter(<PyObject*>descr, &self.status_closure)
        return 0

    cdef inline void _end_hold(self, int idx, int64_t now) noexcept:
        cdef Slot* s = &self.slots[idx]
        cdef int64_t start = s.acquired_ns
        _hist_add(&self.hold_hist, now - start)
        if start < self.window_start_ns:
            start = self.window_start_ns
        self.busy_ns += now - start
        self.n_in_use -= 1
        self.counters[C_RELEASED] += 1
        s.last_used_ns = now

    cdef inline void _put(self, int idx, int64_t now) noexcept:
        """A usable connection: hand it to the oldest waiter, else to the ring."""
        cdef Waiter w = self._pop_waiter()
        cdef Slot* s = &self.slots[idx]
        if w is None:
            s.state = IDLE
            self._ring_push(idx)
            return
        self.holders[idx] = w.holder
        self.n_waiting -= 1
        self.counters[C_HANDOFFS] += 1
        self._lend(idx, now, now - w.enqueued_ns)
        w.idx = idx
        w.state = W_GIVEN
        try:
            w.wakeup()
        except BaseException:
            # A thread's wakeup (a lock release) does not fail; an asyncio
            # waiter's (its future's set_result) does when the deadline or a
            # cancellation resolved the future first. Either way the waiter
            # owns the slot and finds it through `_cancel_wait`.
            pass

    cdef inline void _ring_push(self, int idx) noexcept:
        cdef int pos = self.ring_head + self.ring_count
        if pos >= self.cap:
            pos -= self.cap
        self.ring[pos] = idx
        self.ring_count += 1

    cdef inline int _ring_pop(self) noexcept:
        cdef int pos
        self.ring_count -= 1
        if self.lifo:
            pos = self.ring_head + self.ring_count
            if pos >= self.cap:
                pos -= self.cap
            return self.ring[pos]
        pos = self.ring_head
        self.ring_head += 1
        if self.ring_head >= self.cap:
            self.ring_head = 0
        return self.ring[pos]

    cdef inline void _mark_open(self, int64_t now, int delta) noexcept:
        self.open_ns += self.n_open * (now - self.open_mark_ns)
        self.open_mark_ns = now
        self.n_open += delta

    # ---- the policy's side ----------------------------------------------
    # The core calls these when a decision needs more than comparing numbers.
    # They are cpdef so that a Python class overrides them even when it is a
    # mixin listed before the core (``class Pool(PoolPolicy, PoolCore)``):
    # the C call looks the name up on the instance's type. The defaults only
    # say that no policy provides them.

    cpdef object _acquire_slow(self, object timeout, int idx):
        """Lend a connection when the fast path could not; return it.

        ``idx`` is a slot the core popped (now CHECKING) but could not vouch
        for: it needs a probe, expired, is of an older generation or another
        process, the pool is over ``max_open``, or its client's status reads a
        transaction open (written through a stale reference while idle). The
        policy owns it: lend it (``_lend_checked``), put it back
        (``_putback``) or retire it (``_discard``). ``idx`` is -1 when no idle
        slot was at hand, the pool is closed, or ``timeout`` is not a number
        of seconds in [0, MAX_TIMEOUT] (then the policy raises the error).
        """
        raise NotImplementedError("_acquire_slow must be provided by the pool's policy")

    cpdef object _release_slow(self, int idx, bint commit):
        """Take back a connection the core cannot simply shelve.

        The slot is RELEASING (its driver status says a transaction is open,
        or it expired, or the pool closed, resized or drained, or every
        return goes through the policy): the policy commits (``commit``: a
        ``with pool.connection()`` block ended without an exception) or rolls
        back, resets, then shelves (``_putback``) or retires (``_discard``) it.
        """
        raise NotImplementedError("_release_slow must be provided by the pool's policy")

    cpdef object _release_unknown(self, object conn):
        """``conn`` was released to this pool but is not one it has lent
        (another pool's, already discarded, or an equal but different object):
        the policy raises its error (or ignores a connection inherited over a
        fork)."""
        raise NotImplementedError("_release_unknown must be provided by the pool's policy")

    cpdef object _capture_holder(self):
        """Where the caller acquires from, recorded with the lend when the
        policy tracks holders (leak reports); the core keeps it opaque. The
        default records nothing."""
        return None

    # ---- the clock --------------------------------------------------------

    cdef inline int64_t _clock_ns(self) except? -1:
        if self.clock is None:
            return _now()
        return self._call_clock()

    cdef int64_t _call_clock(self) except? -1:
        return PyNumber_Index(self.clock())

    def _now_ns(self):
        """The core's clock now, in nanoseconds: what the policy stamps
        connections with (``_add``'s created and deadline) so that they compare
        with the core's own readings."""
        return self._clock_ns()

    def _set_clock(self, clock):
        """Read time from ``clock()`` (int nanoseconds, never going back), or
        from CLOCK_MONOTONIC again with None. For tests of lifetime and idle
        limits that must not sleep.

        Every timestamp the core holds moves by the difference between the two
        clocks' readings now, so what is under way carries over: idle time,
        time held, remaining lifetime, time waited.
        """
        cdef int64_t old_now, new_now, shift
        cdef int idx
        cdef Slot* s
        cdef Waiter w
        if clock is not None and not callable(clock):
            raise TypeError("clock must be None or a callable returning int nanoseconds, "
                            "not %r" % (clock,))
        old_now = self._clock_ns()
        new_now = _now() if clock is None else PyNumber_Index(clock())  # int64 or raise
        shift = <object>new_now - <object>old_now  # in Python ints: OverflowError, no wrap
        # No Python code runs from here on: the switch is atomic.
        for idx in range(self.cap):
            s = &self.slots[idx]
            if s.state != FREE:
                s.created_ns = _shifted(s.created_ns, shift)
                s.last_used_ns = _shifted(s.last_used_ns, shift)
                s.acquired_ns = _shifted(s.acquired_ns, shift)
                s.deadline_ns = _shifted(s.deadline_ns, shift)
        w = self.wait_head
        while w is not None:
            w.enqueued_ns = _shifted(w.enqueued_ns, shift)
            w = w.next
        self.open_mark_ns = _shifted(self.open_mark_ns, shift)
        self.window_start_ns = _shifted(self.window_start_ns, shift)
        self.clock = clock

    # ---- waiters --------------------------------------------------------

    cdef inline Waiter _pop_waiter(self):
        cdef Waiter w = self.wait_head
        if w is not None:
            self._unlink(w)
        return w

    cdef void _unlink(self, Waiter w) noexcept:
        if w.prev is None:
            self.wait_head = w.next
        else:
            w.prev.next = w.next
        if w.next is None:
            self.wait_tail = w.prev
        else:
            w.next.prev = w.prev
        w.prev = None
        w.next = None

    def _new_waiter(self, wakeup):
        """A Waiter of this core's kind, for ``_pop_or_wait``."""
        return Waiter(wakeup)

    def _pop_or_wait(self, Waiter waiter not None, int max_waiting):
        """Pop an idle slot (now CHECKING) or queue ``waiter``, atomically.

        Returns the slot index, ENQUEUED, REJECTED when ``max_waiting``
        callers already wait (0 = unbounded), or POOL_CLOSED.
        """
        cdef int64_t now = self._clock_ns()  # before any change (see _acquire)
        cdef int idx
        if self.closed:
            return POOL_CLOSED
        if self.ring_count > 0:
            idx = self._ring_pop()
            self.slots[idx].state = CHECKING
            return idx
        if max_waiting > 0 and self.n_waiting >= max_waiting:
            self.counters[C_REJECTED] += 1
            return REJECTED
        if waiter.state != W_NEW:
            raise ValueError("a Waiter can be queued only once")
        waiter.state = W_WAITING
        waiter.enqueued_ns = now
        waiter.prev = self.wait_tail
        if self.wait_tail is None:
            self.wait_head = waiter
        else:
            self.wait_tail.next = waiter
        self.wait_tail = waiter
        self.n_waiting += 1
        self.counters[C_WAITS] += 1
        return ENQUEUED

    def _cancel_wait(self, Waiter waiter not None):
        """The waiter gives up. Returns its slot if one was handed over meanwhile."""
        if waiter.state == W_WAITING:
            self._unlink(waiter)
            waiter.state = W_CANCELLED
            self.n_waiting -= 1
            return ENQUEUED
        if waiter.state == W_GIVEN:
            return waiter.idx
        return REJECTED

    def _fail_waiters(self, error):
        """Wake every waiter with FAILED and ``error``; returns how many."""
        return self._wake_all(W_FAILED, error)

    cdef int _wake_all(self, int state, object error) except -1:
        cdef Waiter w
        cdef int n = 0
        while True:
            w = self._pop_waiter()
            if w is None:
                return n
            self.n_waiting -= 1
            w.state = state
            w.error = error
            n += 1
            try:
                w.wakeup()
            except BaseException:
                pass

    # ---- slots, for the policy ------------------------------------------

    def _set_policy(self, *, bint lifo, int64_t bypass_ns, int max_open, status_attr,
                    idle_status, bint always_slow_release, bint track_holders):
        if max_open < 1:
            raise ConfigError("max_open must be at least 1")
        if self.ring_count and lifo != self.lifo:
            raise ValueError("cannot change the reuse order of a non-empty ring")
        self._reserve(max_open)
        self.lifo = lifo
        self.bypass_ns = bypass_ns
        self.max_open = max_open
        self.status_attr = status_attr
        self.idle_status = idle_status
        self.status_type = None  # learnt again from the next connection
        self.status_descr = None
        self.status_get = NULL
        self.status_cfn = NULL
        self.always_slow_release = always_slow_release or status_attr is None
        self.lend_check = status_attr is not None
        self.track_holders = track_holders

    cdef int _reserve(self, int capacity) except -1:
        """Grow slot and ring storage to ``capacity`` (never shrinks)."""
        cdef Slot* slots
        cdef int* ring
        cdef int i, pos
        if capacity <= self.cap:
            return 0
        slots = <Slot*>malloc(capacity * sizeof(Slot))
        ring = <int*>malloc(capacity * sizeof(int))
        if slots == NULL or ring == NULL:
            free(slots)
            free(ring)
            raise MemoryError()
        memset(slots, 0, capacity * sizeof(Slot))
        if self.cap:
            memcpy(slots, self.slots, self.cap * sizeof(Slot))
        for i in range(self.ring_count):
            pos = self.ring_head + i
            if pos >= self.cap:
                pos -= self.cap
            ring[i] = self.ring[pos]
        free(self.slots)
        free(self.ring)
        self.slots = slots
        self.ring = ring
        self.ring_head = 0
        self.conns.extend([None] * (capacity - self.cap))
        self.status_srcs.extend([None] * (capacity - self.cap))
        self.holders.extend([None] * (capacity - self.cap))
        self.cap = capacity
        return 0

    def _add(self, conn, status_src, int64_t created_ns, int64_t deadline_ns):
        """Register a new connection and hand it to the oldest waiter, else put
        it in the ring. Returns its slot, or -1 if the pool is closed."""
        cdef int64_t now = self._clock_ns()
        cdef int idx = -1, i
        cdef Slot* s
        if self.closed:
            return -1
        if conn in self.index:
            raise ValueError("connection %r is already in this pool" % (conn,))
        for i in range(self.cap):
            if self.slots[i].state == FREE:
                idx = i
                break
        if idx < 0:
            idx = self.cap
            self._reserve(self.cap * 2 if self.cap else 1)
        s = &self.slots[idx]
        s.state = CHECKING
        s.pid = self.pid
        s.generation = self.generation
        s.created_ns = created_ns
        s.last_used_ns = now
        s.deadline_ns = deadline_ns
        s.leak_reported = 0
        self.conns[idx] = conn
        self.status_srcs[idx] = status_src
        self.holders[idx] = None
        self.index[conn] = idx
        self._mark_open(now, 1)
        self.counters[C_OPENED] += 1
        self._put(idx, now)
        return idx

    cdef int _check_idx(self, int idx) except -1:
        if idx < 0 or idx >= self.cap:
            raise IndexError("no slot %d in this pool" % idx)
        return 0

    def _verdict(self, int idx):
        """Why a CHECKING or RELEASING slot cannot simply be lent or put back."""
        cdef int64_t now = self._clock_ns()  # before taking a slot pointer
        self._check_idx(idx)
        cdef Slot* s = &self.slots[idx]
        if self.closed:
            return CLOSED
        if s.pid != self.pid:
            return FORKED
        if s.generation != self.generation:
            return STALE
        if now >= s.deadline_ns:
            return EXPIRED
        if self.n_open > self.max_open:
            return OVERSIZE
        if s.state == RELEASING:
            if not self._status_idle(idx):
                return DIRTY
            if self.always_slow_release:
                return SLOW
            return OK
        # CHECKING: about to be lent. A status that does not read idle comes
        # first: a transaction opened while it sat idle (a stale reference's
        # write) is rolled back, a status that cannot be read probed.
        cdef bint probe = now - s.last_used_ns > self.bypass_ns
        if self.lend_check and not self._status_idle(idx):
            return DIRTY
        return PROBE if probe else OK

    def _lend_checked(self, int idx, int64_t wait_ns, holder=None):
        """Lend a CHECKING slot that the policy has verified (recording
        ``holder`` in the same step)."""
        cdef int64_t now = self._clock_ns()
        self._check_idx(idx)
        if self.slots[idx].state != CHECKING:
            raise ValueError("slot %d is not being checked" % idx)
        conn = self._lend(idx, now, wait_ns)
        self.holders[idx] = holder
        return conn

    def _putback(self, int idx):
        """Return a CHECKING or RELEASING slot to service (waiter or ring).

        Once the pool is closed nothing goes back into service: the slot is
        discarded instead and its connection returned, for the caller to close.
        """
        cdef int64_t now = self._clock_ns()
        self._check_idx(idx)
        cdef int state = self.slots[idx].state
        if state != RELEASING and state != CHECKING:
            raise ValueError("slot %d is neither being checked nor released" % idx)
        if self.closed:
            return self._discard(idx, REASON_CLOSED)
        if state == RELEASING:
            self._end_hold(idx, now)
        else:
            self.slots[idx].last_used_ns = now
        self._put(idx, now)
        return None

    def _discard(self, int idx, int reason):
        """Remove a CHECKING, RELEASING or IN_USE slot; returns its connection to close."""
        cdef int64_t now = self._clock_ns()
        self._check_idx(idx)
        if reason < 0 or reason >= N_REASONS:
            raise ValueError("no close reason %d" % reason)
        cdef Slot* s = &self.slots[idx]
        if s.state == IN_USE or s.state == RELEASING:
            self._end_hold(idx, now)
        elif s.state != CHECKING:
            raise ValueError("slot %d cannot be discarded in its state" % idx)
        conn = self.conns[idx]
        self._free_slot(idx)
        self.closed_by[reason] += 1
        self._mark_open(now, -1)
        return conn

    cdef int _free_slot(self, int idx) except -1:
        conn = self.conns[idx]
        self.index.pop(conn, None)
        self.conns[idx] = None
        self.status_srcs[idx] = None
        self.holders[idx] = None
        self.slots[idx].state = FREE
        return 0

    def _slot_info(self, int idx):
        """The numbers kept for one slot (for tests and monitoring)."""
        self._check_idx(idx)
        cdef Slot* s = &self.slots[idx]
        return {"state": s.state, "pid": s.pid, "generation": s.generation,
                "created_ns": s.created_ns, "last_used_ns": s.last_used_ns,
                "acquired_ns": s.acquired_ns, "deadline_ns": s.deadline_ns}

    def _conn_at(self, int idx):
        self._check_idx(idx)
        return self.conns[idx]

    def _holder_at(self, int idx):
        """What ``_capture_holder`` recorded at the slot's last lend (kept
        while it is idle), or None."""
        self._check_idx(idx)
        return self.holders[idx]

    def _slot_of(self, conn):
        """The slot index of a connection of this pool, or -1."""
        return self._slot_index(conn)

    def _suspect_idle(self):
        """Make every idle connection be probed before it is lent again (their
        last use moves back past the bypass window); returns how many. For when
        one connection was found dead: its siblings may be dead too."""
        cdef int64_t now = self._clock_ns()
        cdef int64_t before = now - self.bypass_ns - 1
        cdef int i, pos, n = self.ring_count
        cdef Slot* s
        if self.bypass_ns < 0:
            return 0  # every lend is probed anyway
        for i in range(n):
            pos = self.ring_head + i
            if pos >= self.cap:
                pos -= self.cap
            s = &self.slots[self.ring[pos]]
            if s.last_used_ns > before:
                s.last_used_ns = before
        return n

    def _take_idle(self, int64_t max_idle_ns=-1, int min_keep=0, bint everything=False):
        """Remove idle slots that must go; return ``[(idx, verdict_or_reason)]``.

        With ``everything`` every idle slot is taken (state CHECKING) with
        verdict OK. Otherwise a slot is taken when it is stale, forked, past
        its lifetime, beyond ``max_open``, or idle longer than ``max_idle_ns``
        while more than ``min_keep`` connections are open. Taken slots are
        CHECKING; the caller discards or puts them back.
        """
        cdef int64_t now = self._clock_ns()
        cdef int i, idx, pos, kept = 0, n = self.ring_count
        cdef int open_after = self.n_open
        cdef Slot* s
        cdef int verdict
        taken = []
        # Walk from the least recently used end so idle shrinking drops the oldest.
        for i in range(n):
            pos = self.ring_head + i
            if pos >= self.cap:
                pos -= self.cap
            idx = self.ring[pos]
            s = &self.slots[idx]
            verdict = OK
            if s.pid != self.pid:
                verdict = FORKED
            elif s.generation != self.generation:
                verdict = STALE
            elif now >= s.deadline_ns:
                verdict = EXPIRED
            elif open_after > self.max_open:
                verdict = OVERSIZE
            elif max_idle_ns >= 0 and now - s.last_used_ns > max_idle_ns and open_after > min_keep:
                verdict = IDLE_TOO_LONG
            if everything or verdict != OK:
                s.state = CHECKING
                taken.append((idx, verdict))
                if verdict != OK:
                    open_after -= 1
            else:
                # Compact the ring in place, keeping order.
                pos = self.ring_head + kept
                if pos >= self.cap:
                    pos -= self.cap
                self.ring[pos] = idx
                kept += 1
        self.ring_count = kept
        return taken

    def _close_core(self):
        """Refuse further acquisitions and wake every waiter with CLOSED."""
        self.closed = True
        return self._wake_all(W_CLOSED, None)

    def _bump_generation(self):
        self.generation += 1
        return self.generation

    def _after_fork(self, long pid):
        """In a forked child: forget every slot without closing it.

        Returns the parent's connections; the caller must keep them alive so
        that no finalizer closes a socket the parent still uses.
        """
        cdef int idx
        cdef int64_t now = self._clock_ns()
        orphans = [c for c in self.conns if c is not None]
        self.closed_by[REASON_FORK] += self.n_open
        self.counters[C_RELEASED] += self.n_in_use
        for idx in range(self.cap):
            self.slots[idx].state = FREE
            self.conns[idx] = None
            self.status_srcs[idx] = None
            self.holders[idx] = None
        self.index.clear()
        self.ring_count = 0
        self.ring_head = 0
        self.n_in_use = 0
        self._mark_open(now, -self.n_open)
        # The threads that waited live only in the parent.
        self.wait_head = None
        self.wait_tail = None
        self.n_waiting = 0
        self.pid = pid
        return orphans

    def _leaks(self, int64_t threshold_ns):
        """In-use slots held longer than the threshold and not reported yet."""
        cdef int64_t now = self._clock_ns()
        cdef int idx
        cdef Slot* s
        found = []
        for idx in range(self.cap):
            s = &self.slots[idx]
            if s.state == IN_USE and not s.leak_reported and now - s.acquired_ns > threshold_ns:
                s.leak_reported = 1
                self.counters[C_LEAKS] += 1
                found.append((self.conns[idx], now - s.acquired_ns, self.holders[idx]))
        return found

    def _holders(self):
        """``[(conn, held_ns, holder)]`` for every connection in use."""
        cdef int64_t now = self._clock_ns()
        cdef int idx
        return [(self.conns[idx], now - self.slots[idx].acquired_ns, self.holders[idx])
                for idx in range(self.cap) if self.slots[idx].state == IN_USE]

    def _open_slots(self):
        """``[(conn, state)]`` for every slot holding a connection, in one step."""
        cdef int idx
        return [(self.conns[idx], self.slots[idx].state)
                for idx in range(self.cap) if self.slots[idx].state != FREE]

    def _count(self, int counter, uint64_t amount=1):
        if counter < 0 or counter >= N_COUNTERS:
            raise ValueError("no counter %d" % counter)
        self.counters[counter] += amount

    def _sizes(self):
        """``(open, idle, in_use, waiting)`` right now."""
        return (self.n_open, self.ring_count, self.n_in_use, self.n_waiting)

    @property
    def _is_closed(self):
        return self.closed

    @property
    def _pid(self):
        return self.pid

    def _snapshot(self, bint reset=False):
        """Counters, histograms and gauges as plain Python values."""
        cdef int64_t now = self._clock_ns()
        cdef int64_t busy = self.busy_ns, start
        cdef int idx
        for idx in range(self.cap):
            if self.slots[idx].state == IN_USE or self.slots[idx].state == RELEASING:
                start = self.slots[idx].acquired_ns
                if start < self.window_start_ns:
                    start = self.window_start_ns
                busy += now - start
        self._mark_open(now, 0)
        snap = {
            "counters": {COUNTER_NAMES[i]: self.counters[i] for i in range(N_COUNTERS)},
            "closed": {CLOSE_REASONS[i]: self.closed_by[i] for i in range(N_REASONS)},
            "wait": _hist_export(&self.wait_hist),
            "hold": _hist_export(&self.hold_hist),
            "busy_ns": busy,
            "open_ns": self.open_ns,
            "window_ns": now - self.window_start_ns,
            "open": self.n_open,
            "idle": self.ring_count,
            "in_use": self.n_in_use,
            "waiting": self.n_waiting,
            "generation": self.generation,
        }
        if reset:
            memset(self.counters, 0, sizeof(self.counters))
            memset(self.closed_by, 0, sizeof(self.closed_by))
            memset(&self.wait_hist, 0, sizeof(Histogram))
            memset(&self.hold_hist, 0, sizeof(Histogram))
            self.busy_ns = 0
            self.open_ns = 0
            self.window_start_ns = now
        return snap


cdef _enable_context_vectorcall():
    global fp_ctx_impl
    cdef ConnectionContext probe = ConnectionContext.__new__(ConnectionContext)
    fp_ctx_impl = _context_call
    fp_enable_vectorcall(
        ConnectionContext, <char*>&probe.vectorcall - <char*><PyObject*>probe)


_enable_context_vectorcall()

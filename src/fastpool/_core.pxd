# cython: language_level=3
# The C surface of fastpool's compiled core. Mechanism only: the idle ring,
# slot bookkeeping, FIFO waiters with hand-off, counters and histograms.

cimport cython
from libc.stdint cimport int64_t, uint64_t

cdef enum:
    N_BUCKETS = 64
    N_REASONS = 8
    N_COUNTERS = 11


ctypedef struct Histogram:
    uint64_t buckets[N_BUCKETS]
    uint64_t count
    uint64_t total
    uint64_t max


ctypedef struct Slot:
    int state
    int leak_reported
    long pid
    uint64_t generation
    int64_t created_ns
    int64_t last_used_ns
    int64_t acquired_ns
    int64_t deadline_ns


@cython.final
cdef class Waiter:
    cdef:
        readonly int state
        readonly int idx
        readonly int64_t enqueued_ns
        public object error
        public object holder
        public object token   # the policy's: what its caller waits on
        public object limits  # the policy's: the caller's deadline and timeout
        object wakeup
        Waiter prev
        Waiter next


@cython.final
cdef class ConnectionContext:
    cdef:
        void* vectorcall  # set per instance; see fp_ctx_vectorcall
        PoolCore pool
        object timeout
        object conn

    cdef object _enter(self)
    cdef object _exit(self, object et)


@cython.final
cdef class AsyncConnectionContext:
    cdef:
        PoolCore pool
        object timeout
        object conn


cdef class PoolCore:
    cdef:
        Slot* slots
        int* ring
        int cap
        int ring_head
        int ring_count
        bint lifo
        bint closed
        bint always_slow_release
        bint track_holders
        bint lend_check  # a status to read: every lend checks it
        int n_open
        int n_in_use
        int n_waiting
        int max_open
        long pid
        uint64_t generation
        int64_t bypass_ns
        list conns
        list status_srcs
        list holders
        dict index
        object status_attr
        object status_type
        object status_descr
        void* status_get  # status_descr's C getter (a getset descriptor), or NULL
        void* status_closure
        void* status_cfn  # status_type's __fastpool_status__ reader, or NULL
        object idle_status
        Waiter wait_head
        Waiter wait_tail
        uint64_t counters[N_COUNTERS]
        uint64_t closed_by[N_REASONS]
        Histogram wait_hist
        Histogram hold_hist
        int64_t busy_ns
        int64_t open_ns
        int64_t open_mark_ns
        int64_t window_start_ns
        object clock  # None: CLOCK_MONOTONIC; else a callable returning int ns
        # The asyncio front end: the thread whose loop owns the pool (0: none),
        # and what the policy's slow release left for release_async to await.
        unsigned long owner_thread
        object owner_loop
        bint owner_loop_tid
        object later

    # Called by the core, provided by the pool's policy: a Python subclass, or
    # a mixin placed before PoolCore in the MRO, overrides them (cpdef).
    cpdef object _acquire_slow(self, object timeout, int idx)
    cpdef object _release_slow(self, int idx, bint commit)
    cpdef object _release_unknown(self, object conn)
    cpdef object _capture_holder(self)

    @cython.final
    cdef inline int64_t _clock_ns(self) except? -1

    @cython.final
    cdef int64_t _call_clock(self) except? -1

    @cython.final
    cdef object _acquire(self, object timeout)

    @cython.final
    cdef object _take_later(self)

    @cython.final
    cdef bint _off_owner(self) except -1

    @cython.final
    cdef int _release(self, object conn, bint commit, bint slow=*) except -1

    @cython.final
    cdef inline object _lend(self, int idx, int64_t now, int64_t wait_ns)

    @cython.final
    cdef object _lend_with_holder(self, int idx, int64_t now)

    @cython.final
    cdef int _check_idx(self, int idx) except -1

    @cython.final
    cdef inline void _end_hold(self, int idx, int64_t now) noexcept

    @cython.final
    cdef inline void _put(self, int idx, int64_t now) noexcept

    @cython.final
    cdef inline bint _clean(self, int idx, int64_t now) noexcept

    @cython.final
    cdef inline bint _status_idle(self, int idx) noexcept

    @cython.final
    cdef int _learn_status_type(self, object src) except -1

    @cython.final
    cdef int _wake_all(self, int state, object error) except -1

    @cython.final
    cdef inline void _ring_push(self, int idx) noexcept

    @cython.final
    cdef inline int _ring_pop(self) noexcept

    @cython.final
    cdef inline void _mark_open(self, int64_t now, int delta) noexcept

    @cython.final
    cdef inline Waiter _pop_waiter(self)

    @cython.final
    cdef void _unlink(self, Waiter w) noexcept

    @cython.final
    cdef inline int _slot_index(self, object conn) except -2

    @cython.final
    cdef int _reserve(self, int capacity) except -1

    @cython.final
    cdef int _free_slot(self, int idx) except -1

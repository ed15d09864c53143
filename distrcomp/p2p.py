# cython: boundscheck=False, wraparound=False, initializedcheck=False
"""The point-to-point engine behind ``send``, ``recv`` and ``probe``.

Design, in one paragraph: every message is a frame plus payloads (see :mod:`distrcomp.wire`),
sent on distrcomp's private communicator with MPI tag ``4*tag + kind``: kind ``FRAMED`` for a
frame, ``PAYLOAD`` for its payloads, ``BARE`` for a bare pickle frame (most small objects),
and ``REPEAT`` for an array's data sent without its frame head: the head would have been the
last array head sent to that node, which the receiver keeps per node (so a loop sending one
dtype and shape sends one MPI message per array, as ``Send`` would, with nothing else in it).
Arrays of more than ``_REPEAT_MAX`` bytes always get their head. Frames are taken with a
matched probe from any node with any tag (``MPI_Mprobe``/``MPI_Improbe`` then ``MPI_Mrecv``),
so no other receive can steal what was probed. Every blocking call (``send`` of a large array,
``recv``, the collectives, the exit handler) keeps taking frames while it waits for what it is
waiting for, and decodes each (its payloads received at once) into an arrival-ordered queue
that ``recv`` consults first. So a node blocked in distrcomp always accepts incoming messages,
and a ring where every node sends a large array before receiving cannot deadlock.

``send`` keeps value semantics without copying large arrays: a frame is a fresh ``bytes``, a
small array's data alone is copied (into a fresh ``bytes``, or in the compiled build into a
buffer reused while MPI completes each send at once), and when payloads are views of the
caller's memory, ``send`` returns only once MPI has completed them. When nothing refers to the caller's memory, ``send``
returns at once and MPI completes the sends in the background.

One source, two builds. This file runs as plain Python, and where a C compiler and the MPI's
``mpicc`` were found at install, setup.py compiled this same file with Cython (pure-Python
mode) once per MPI ABI, as ``p2p.<abi>.<EXT_SUFFIX>`` beside it. Importing ``distrcomp.p2p``
loads the build made for the ABI of the MPI that mpi4py loaded (see :mod:`distrcomp._build`),
else this source. The only differences are the blocks under ``if cython.compiled:``: there the
few calls of every small message (``MPI_Isend``, ``MPI_Test``, ``MPI_Mprobe``,
``MPI_Improbe``, ``MPI_Mrecv``) are made directly on the communicator's handle, and arrays are
made with numpy's C API, instead of through mpi4py's and numpy's Python objects.

Why a payload can never be mistaken for a frame: a node receives a frame's payloads right after
the frame, before it probes again, and MPI does not let messages between two nodes overtake
each other; so the next message from a node that an any-tag probe matches is always a frame
(or a ``REPEAT`` message, which stands for one). For the same reason a node takes the array
heads from each node in the order they were sent, so the head it keeps for a node when a
``REPEAT`` arrives is the one its sender compared with.

Threads. Every method may be called from any thread (MPI is initialised at
``MPI_THREAD_MULTIPLE``, see :mod:`distrcomp.world`). One lock (``_lock``) guards the engine's
state and is held only for short steps, never while waiting: posting a message's sends (its
frame and payloads together, so each node's stream stays frame, payloads, frame, ...), the
queue, the pending sends (in the compiled build a flag set holding the GIL: nothing but a test
and a store on a message's path).
Taking messages from MPI (probe, receive, decode, in arrival order) is the job of one thread at
a time, the *taker* (a second lock, tried without waiting): it may block in ``MPI_Mprobe``
without the GIL, puts what is not its own in the queue and wakes the threads waiting on
``_arrived``; a thread that finds another one taking waits there (or, in ``wait``, polls its
request). So a blocking call in one thread never stops another from sending or from
getting its messages, and every message is taken once, in the order its sender sent it.

Why a probe and not a receive kept posted for any node: with MPICH's UCX device between hosts,
a posted any-source receive together with large sends in both directions hangs (reproduced in
raw mpi4py: tests/cluster/programs/p2p_pattern.py); matched probes do not.
"""

from __future__ import annotations

import array as pyarray
import functools
import numbers
import operator
import os
import pickle
import sys
import threading
import time
from collections import Counter, deque
from typing import Any

try:
    import cython

    if not cython.compiled:  # Cython's own pure-Python module: _shadow does the same, faster
        raise ImportError
except ImportError:  # running as plain Python
    from . import _shadow as cython
import numpy as np
from mpi4py import MPI

from . import buffers
from .errors import DistrCompError, MessageDecodeError
from .tags import ANY_SOURCE, ANY_TAG
from .wire import (
    BARE_PICKLE,
    FRAME_MAX,
    decode,
    describe,
    encode,
    has_pickled_dtype,
    is_array_frame,
)

if cython.compiled:
    from cython.cimports import numpy as cnp
    from cython.cimports.cpython.buffer import (
        PyBUF_SIMPLE,
        PyBUF_WRITABLE,
        PyBuffer_Release,
        PyObject_GetBuffer,
    )
    from cython.cimports.cpython.bytearray import PyByteArray_AS_STRING
    from cython.cimports.cpython.bytes import PyBytes_AS_STRING, PyBytes_FromStringAndSize
    from cython.cimports.cpython.exc import PyErr_CheckSignals
    from cython.cimports.cpython.long import PyLong_AsLongAndOverflow
    from cython.cimports.libc.string import memcpy
    from cython.cimports.mpi4py import MPI as cMPI
    from cython.cimports.mpi4py.libmpi import (
        MPI_ANY_SOURCE,
        MPI_ANY_TAG,
        MPI_BYTE,
        MPI_STATUS_IGNORE,
        MPI_Comm,
        MPI_Get_count,
        MPI_Improbe,
        MPI_Isend,
        MPI_Message,
        MPI_Mprobe,
        MPI_Mrecv,
        MPI_Request,
        MPI_Status,
        MPI_Test,
    )
    from cython.cimports.posix.time import CLOCK_MONOTONIC, clock_gettime, timespec

    # The handles baked in at compile time come from the mpi.h of the mpicc that built this
    # file; they must be those of the MPI library mpi4py has loaded (MPICH's MPI_BYTE is a
    # constant, Open MPI's an address), or every call would be wrong. distrcomp._build then
    # falls back to the source.
    if (cython.cast(cython.Py_ssize_t, MPI_BYTE) != MPI.BYTE.handle
            or MPI_ANY_SOURCE != MPI.ANY_SOURCE or MPI_ANY_TAG != MPI.ANY_TAG):
        raise ImportError("distrcomp.p2p was compiled for another MPI ABI than the one mpi4py "
                          f"loaded ({MPI.Get_library_version().splitlines()[0]})")
else:
    from ._build import compiled_twin

    _twin = compiled_twin(__name__, __file__, MPI)
    if _twin is not None:  # the import of this module returns the compiled build instead
        sys.modules[__name__] = _twin

__all__ = ["Engine", "compiled", "new_engine"]

# The MPI tag of a message of tag t is t << _KIND_BITS | kind (see the module docstring).
FRAMED = cython.declare(cython.int, 0)
PAYLOAD = cython.declare(cython.int, 1)
BARE = cython.declare(cython.int, 2)
REPEAT = cython.declare(cython.int, 3)
_KIND_BITS = cython.declare(cython.int, 2)
_KIND_MASK = cython.declare(cython.int, 3)
KINDS = {"FRAMED": FRAMED, "PAYLOAD": PAYLOAD, "BARE": BARE, "REPEAT": REPEAT}  # for Python eyes
# What a node is blocked in (Engine._op, read by distrcomp.diag); set only where a call blocks.
OP_SEND = cython.declare(cython.int, 1)
OP_RECV = cython.declare(cython.int, 2)
OP_PROBE = cython.declare(cython.int, 3)
OP_COLLECTIVE = cython.declare(cython.int, 4)
OP_EXIT = cython.declare(cython.int, 5)
_REPEAT_MAX = (1 << 31) - 1  # bytes: a larger array is always sent after its head (C int counts)

_SPIN_POLLS = 64  # tests of a request alone before wait also takes frames and yields
_PROBE_SPINS = cython.declare(cython.int, 64)  # probes before a blocking probe lets go of the GIL
_EXIT_TIMEOUT = 10.0  # seconds the exit handler waits for this node's sends before warning

_ndarray = np.ndarray
_loads = pickle.loads
_index = operator.index
_new_block_array = buffers.empty
_np_empty = np.empty
_BYTE = MPI.BYTE
_MPI_ANY_SOURCE, _MPI_ANY_TAG = MPI.ANY_SOURCE, MPI.ANY_TAG  # MPI's values: not distrcomp's


def compiled() -> bool:
    """True when this process runs the compiled build of this module (see the module docstring).

    False when none was built at install (no C compiler or no ``mpicc`` there: the install goes
    on without it), when none was built for the ABI of the MPI that mpi4py loaded, or when the
    environment sets ``DISTRCOMP_PURE_PYTHON=1``. Both builds are this same source: they behave
    the same and talk to each other; the compiled one spends less time per small message.
    """
    return cython.compiled


@cython.cfunc
@cython.inline
def _now() -> cython.double:
    """``time.monotonic()``; in the compiled build the same clock without a Python call."""
    if cython.compiled:
        ts: timespec
        clock_gettime(CLOCK_MONOTONIC, cython.address(ts))
        return ts.tv_sec + ts.tv_nsec * 1e-9
    return time.monotonic()


class _Finished:
    """What :meth:`Engine._take` returns for a node's exit notice (never queued)."""


_FINISHED = _Finished()


class _Undecodable:
    """Stands in the queue for a message that arrived but could not be decoded."""

    __slots__ = ("error",)

    def __init__(self, error: MessageDecodeError) -> None:
        self.error = error


def _who(src: int) -> str:
    return "any node" if src == ANY_SOURCE else f"node {src}"


def _which(tag: int) -> str:
    return "any tag" if tag == ANY_TAG else f"tag {tag}"


@cython.cfunc
@cython.inline
def _check(ierr: cython.int) -> cython.int:
    if ierr != 0:
        raise MPI.Exception(ierr)
    return 0


_OUT = cython.declare(cython.long, -(1 << 62))  # below every node id, tag and wildcard
_ANY_SOURCE = cython.declare(cython.long, ANY_SOURCE)
_ANY_TAG = cython.declare(cython.long, ANY_TAG)


@cython.cfunc
@cython.inline
def _quick_int(value: object) -> cython.long:
    """``value`` if it is an ``int`` of fewer than 63 bits, else ``_OUT``: the quick test of an
    argument, before the full checks (which also accept integer-like values)."""
    if cython.compiled:
        overflow: cython.int = 0
        if type(value) is int:
            number: cython.long = PyLong_AsLongAndOverflow(value, cython.address(overflow))
            if not overflow:
                return number
        return _OUT
    return value if type(value) is int and -_OUT > value > _OUT else _OUT


@cython.cclass
class _Head:
    """What an array head received from a node says, for the ``REPEAT`` messages after it."""

    dtype: object
    shape: tuple
    fortran: cython.bint
    nbytes: cython.Py_ssize_t
    typenum: cython.int  # numpy's type number when new_array may allocate plainly, else -1
    dims: cnp.npy_intp[32]  # the shape, for PyArray_SimpleNew (the compiled build)

    def __init__(self, dtype: np.dtype, shape: tuple, order: str, nbytes: int) -> None:
        self.dtype = dtype
        self.shape = shape
        self.fortran = order == "F"
        self.nbytes = nbytes
        # Small C-order arrays whose dtype is the one numpy makes of its type number alone (not
        # '>f8', 'M8[s]', 'U5', ...); large ones reuse memory (distrcomp.buffers).
        simple = np.dtype(dtype.char) is dtype and not self.fortran and nbytes < buffers.MIN_BYTES
        self.typenum = dtype.num if simple and len(shape) <= 32 else -1
        if cython.compiled and self.typenum >= 0:
            i: cython.int
            for i in range(len(shape)):
                self.dims[i] = shape[i]

    @cython.cfunc
    def new_array(self) -> object:
        """A new array of this head's dtype, shape and order, its memory nobody else's."""
        if self.typenum >= 0:  # small, C order, a plain dtype: numpy's own allocation
            if cython.compiled:  # numpy's C API, no Python call
                return cnp.PyArray_SimpleNew(len(self.shape), cython.address(self.dims[0]),
                                             self.typenum)
            return _np_empty(self.shape, self.dtype)
        return _new_block_array(self.shape, self.dtype, self.fortran)


@cython.cclass
class Engine:
    """Point-to-point messaging on one communicator. One instance per process (see ``world``)."""

    comm = cython.declare(object, visibility="readonly")
    node_id = cython.declare(cython.int, visibility="readonly")
    n_node = cython.declare(cython.int, visibility="readonly")
    max_tag = cython.declare(cython.long, visibility="readonly")
    _closed: cython.bint
    _status: object
    # Readable from Python for tests and the exit handler's reports; used only here.
    _queue = cython.declare(object, visibility="readonly")
    _pending = cython.declare(list, visibility="readonly")  # (request, buffer kept alive, dest, nth)
    _interrupted: list  # see _abandon
    _purge_at: cython.Py_ssize_t
    _sent = cython.declare(cython.longlong[:], visibility="readonly")  # messages sent to each node
    # Per node: the dtype, shape and order (Fortran or not) of the last array head sent to it,
    # or None (_repeats);
    _dtypes_to = cython.declare(list, visibility="readonly")
    _shapes_to = cython.declare(list, visibility="readonly")
    _fortran_to = cython.declare(list, visibility="readonly")
    # what the last array head received from it says (_take_repeat).
    _heads_from = cython.declare(list, visibility="readonly")
    _n_received: cython.Py_ssize_t  # frames taken, from any node
    _fill_src: cython.int  # (node, MPI tag) of the payloads decode is reading now
    _fill_mtag: cython.int
    _fill_payload: object  # self._fill, bound once: every frame passes it to decode
    _scratch: bytearray  # the compiled build copies a small array's data here to send it
    # What the last probe found: source, MPI tag, size in bytes, and the matched message.
    _src: cython.int
    _mtag: cython.int
    _count: cython.Py_ssize_t
    _message: object  # mpi4py's Message (the source's build)
    _msg: MPI_Message  # the same as a handle (the compiled build)
    _handle: MPI_Comm  # comm's handle (the compiled build)
    # Where this node is blocked, for distrcomp.diag's report: the call (OP_*), its node and
    # tag, since when (0.0: not blocked now), the bytes of a send, the collective and how many
    # collectives were called before it. Stored only on the paths that block.
    _op = cython.declare(cython.int, visibility="readonly")
    _peer = cython.declare(cython.int, visibility="readonly")
    _tag = cython.declare(cython.long, visibility="readonly")
    _since = cython.declare(cython.double, visibility="readonly")
    _nbytes = cython.declare(cython.Py_ssize_t, visibility="readonly")
    _collective = cython.declare(object, visibility="readonly")
    _n_collective = cython.declare(cython.long, visibility="readonly")
    # The nodes whose exit notice arrived (they have entered their exit handshake: close), and
    # how many collectives each had called then (the notice's tag).
    _finished = cython.declare(list, visibility="readonly")
    _n_finished: cython.int
    _collectives_of: list
    _exit_comm: object  # the exit handshake's own duplicate of comm (see close)
    # distrcomp.diag's profile (--stats, --trace): 0 off (the default), 1 count, 2 also trace.
    _profile = cython.declare(cython.int, visibility="readonly")
    _msgs_to = cython.declare(cython.longlong[:], visibility="readonly")  # per node, by send
    _bytes_to = cython.declare(cython.longlong[:], visibility="readonly")  # frames and payloads
    _msgs_from = cython.declare(cython.longlong[:], visibility="readonly")  # per node, arrived
    _bytes_from = cython.declare(cython.longlong[:], visibility="readonly")
    _blocked = cython.declare(cython.double[:], visibility="readonly")  # seconds, per OP_*
    _on_send = cython.declare(object, visibility="readonly")  # trace: (dest, tag, bytes)
    _on_take = cython.declare(object, visibility="readonly")  # trace: (src, tag, bytes)
    _on_block = cython.declare(object, visibility="readonly")  # trace: (op, peer, tag, t0, t1)
    # Threads (see the module docstring): the lock of the state and the taker's role, flags set
    # holding the GIL in the compiled build (_busy, _taker), threading's locks in the source's
    # (_lock, _taking); the
    # threads waiting for messages wait on _arrived (a condition with a lock of its own), and
    # _waiting counts them (changed holding _arrived's lock).
    _busy: cython.bint
    _taker: cython.bint
    _lock: object
    _taking: object
    _arrived: object
    _waiting: cython.Py_ssize_t
    _threads: cython.bint  # MPI allows calls from any thread (MPI_THREAD_MULTIPLE)
    _owner: cython.long  # the thread that made the engine (the only one allowed otherwise)

    def __init__(self, comm: Any) -> None:
        self.comm = comm
        self.node_id = comm.Get_rank()
        self.n_node = comm.Get_size()
        self.max_tag = (MPI.COMM_WORLD.Get_attr(MPI.TAG_UB) - 3) >> _KIND_BITS
        self._closed = False
        self._status = MPI.Status()
        self._queue = deque()
        self._pending = []
        self._interrupted = []
        self._purge_at = 64
        self._sent = pyarray.array("q", [0]) * self.n_node  # read by the exit handshake
        self._dtypes_to = [None] * self.n_node
        self._shapes_to = [None] * self.n_node
        self._fortran_to = [False] * self.n_node
        self._heads_from = [None] * self.n_node
        self._n_received = 0
        self._fill_src, self._fill_mtag = 0, PAYLOAD
        self._fill_payload = self._fill
        self._message = None
        self._scratch = bytearray(0)
        if cython.compiled:
            self._handle = cython.cast(cMPI.Comm, comm).ob_mpi
        if cython.compiled:
            self._busy = self._taker = False
        else:
            # Re-entrant locks, let go entirely (_release_save, as threading.Condition does):
            # an exception from a signal handler (Ctrl-C's KeyboardInterrupt) can come between
            # taking one and the ``try`` that lets it go. The thread then still owns it, and
            # its next call takes it again and lets it go; a plain Lock stayed taken and every
            # later call waited forever. (The compiled build runs no signal handler there.)
            self._lock, self._taking = threading.RLock(), threading.RLock()
            # In place of the compiled build's _lock_state, _unlock_state and _start_taking (its
            # flags): the locks' own (C) methods.
            self._lock_state, self._unlock_state = self._lock.acquire, self._lock._release_save
            self._start_taking = functools.partial(self._taking.acquire, False)
        self._arrived = threading.Condition()
        self._waiting = 0
        self._threads = MPI.Query_thread() >= MPI.THREAD_MULTIPLE
        self._owner = threading.get_ident()
        self._op, self._peer, self._tag, self._since, self._nbytes = 0, 0, 0, 0.0, 0
        self._collective, self._n_collective = None, 0
        self._finished = [False] * self.n_node
        self._n_finished = 0
        self._collectives_of = [0] * self.n_node
        # A communicator of its own: on comm, a node's exit handshake (a reduce-scatter) would
        # match another node's barrier or bcast, which then returned as if it had completed.
        self._exit_comm = comm.Dup()
        self._profile = 0
        zeros = pyarray.array("q", [0]) * self.n_node
        self._msgs_to, self._bytes_to = zeros, zeros[:]
        self._msgs_from, self._bytes_from = zeros[:], zeros[:]
        self._blocked = pyarray.array("d", [0.0]) * (OP_EXIT + 1)

    def set_profile(self, on_send: Any = None, on_take: Any = None, on_block: Any = None) -> None:
        """Count from now on, per node, the messages and bytes sent and arrived (``_msgs_to``,
        ``_bytes_to``, ``_msgs_from``, ``_bytes_from``; bytes: what MPI moved, frames and
        payloads) and the seconds blocked per call (``_blocked``, by ``OP_*``). With the
        functions given, also call ``on_send(dest, tag, nbytes)`` for every message sent,
        ``on_take(src, tag, nbytes)`` for every message that arrives and ``on_block(op, peer,
        tag, t0, t1)`` after every time this node was blocked (monotonic seconds).
        Used by :mod:`distrcomp.diag` for ``--stats`` and ``--trace``."""
        self._on_send, self._on_take, self._on_block = on_send, on_take, on_block
        self._profile = 1 if on_send is None else 2

    def stop_profile(self) -> None:
        """Stop what :meth:`set_profile` started; the counts so far are kept."""
        self._profile = 0

    def collective(self, name: str, root: int) -> None:
        """Note that a collective ``name`` (with ``root``, or -1) begins: the report of a node
        blocked in it names it and how many collectives this node called before."""
        self._op, self._peer, self._collective = OP_COLLECTIVE, root, name
        self._n_collective += 1

    # ------------------------------------------------------------------ checks
    @cython.annotation_typing(False)  # the checks below raise the documented errors
    def check_node(self, what: str, node: int, allow_any: bool = False) -> None:
        """Raise ValueError unless ``node`` is a node id (or ANY_SOURCE when allowed); TypeError
        unless it is an integer (``int`` or has ``__index__``), and for a ``bool``."""
        if isinstance(node, (bool, np.bool_)) or (type(node) is not int and not hasattr(node, "__index__")):
            raise TypeError(f"{what} must be an int node id, got {type(node).__name__}")
        if allow_any and node == ANY_SOURCE:
            return
        if not 0 <= node < self.n_node:
            raise ValueError(f"{what}={node} but n_node={self.n_node} (node ids are 0..{self.n_node - 1})")

    @cython.annotation_typing(False)  # the checks below raise the documented errors
    def check_tag(self, what: str, tag: int, allow_any: bool = False) -> None:
        """Raise ValueError unless ``0 <= tag <= max_tag`` (or ANY_TAG when allowed); TypeError
        unless it is an integer (``int`` or has ``__index__``), and for a ``bool``."""
        if isinstance(tag, (bool, np.bool_)) or (type(tag) is not int and not hasattr(tag, "__index__")):
            raise TypeError(f"{what}: tag must be an int, got {type(tag).__name__}")
        if allow_any and tag == ANY_TAG:
            return
        if not 0 <= tag <= self.max_tag:
            raise ValueError(f"{what}: tag={tag} is outside 0..{self.max_tag}")

    @staticmethod
    @cython.annotation_typing(False)
    def check_timeout(what: str, timeout: float | None) -> None:
        """Raise TypeError unless ``timeout`` is None or a real number; ValueError if it is
        negative or NaN."""
        if timeout is None:
            return
        if not isinstance(timeout, numbers.Real):
            raise TypeError(f"{what}: timeout must be a number of seconds or None, "
                            f"got {type(timeout).__name__}")
        if not timeout >= 0:
            raise ValueError(f"{what}: timeout={timeout} must be a number of seconds >= 0, or None")

    # ----------------------------------------------------------------- threads
    @cython.cfunc
    @cython.inline
    def _lock_state(self) -> cython.int:
        """Take the lock of the engine's state (without the GIL while another thread holds it).

        The compiled build's; the plain-Python build's are the lock's own methods, bound in
        ``__init__`` over this one, :meth:`_unlock_state` and :meth:`_start_taking`."""
        # A flag set holding the GIL: no Python code runs between its test and its store. A
        # thread that finds it set gives the GIL and the core away until it is cleared (no
        # section holding it waits for anything).
        while self._busy:
            _yield_core()
        self._busy = True
        return 0

    @cython.cfunc
    @cython.inline
    def _unlock_state(self) -> cython.int:
        self._busy = False
        return 0

    @cython.cfunc
    @cython.inline
    def _start_taking(self) -> cython.bint:
        """Become the thread that takes messages from MPI, unless another one is; True if so."""
        # no Python code runs between the test and the store: the GIL is held
        if self._taker:
            return False
        self._taker = True
        return True

    @cython.cfunc
    def _release_taking(self) -> cython.int:
        """Stop being the taker; wake the waiting threads, one of which may take now."""
        if cython.compiled:
            self._taker = False
        else:
            self._taking._release_save()
        if self._waiting:
            self._wake()
        return 0

    def _wake(self) -> None:
        with self._arrived:
            self._arrived.notify_all()

    def check_thread(self, what: str) -> None:
        """Raise DistrCompError if this thread may not call MPI: the MPI library was initialised
        below ``MPI_THREAD_MULTIPLE`` and this is not the thread that initialised distrcomp."""
        if self._threads or threading.get_ident() == self._owner:
            return
        levels = {MPI.THREAD_SINGLE: "MPI_THREAD_SINGLE", MPI.THREAD_FUNNELED: "MPI_THREAD_FUNNELED",
                  MPI.THREAD_SERIALIZED: "MPI_THREAD_SERIALIZED"}
        level = levels.get(MPI.Query_thread(), str(MPI.Query_thread()))
        raise DistrCompError(
            f"{what}: node {self.node_id} was called from a thread other than the one that "
            f"initialised distrcomp, but MPI was initialised at {level}; calls from several "
            "threads need MPI_THREAD_MULTIPLE (leave mpi4py.rc.thread_level at its default)")

    # -------------------------------------------------------------------- send
    @cython.annotation_typing(False)  # the checks below raise the documented errors
    @cython.locals(d=cython.long, t=cython.long)
    def send(self, dest: int, obj: Any, tag: int = 0) -> None:
        """Send ``obj`` to node ``dest``.

        Never waits for ``dest`` to call ``recv`` and never deadlocks against another node's
        ``send``: while it waits for MPI, it accepts incoming messages for later ``recv`` calls.
        Value semantics: once ``send`` returns, changing ``obj`` does not change what ``dest`` gets.
        numpy arrays travel as raw buffers (dtype, shape and C/Fortran order kept; a
        non-contiguous array is copied once): a small one (up to 16 KiB with its head) is copied
        and ``send`` returns at once; a large one is handed to MPI in place, uncopied, and ``send``
        returns when MPI has taken it. An array with the dtype (the same object, a plain one:
        no fields, no metadata), shape and memory order of the last array sent to ``dest``,
        contiguous and under 2 GiB, goes as one MPI message of its data alone (else a small head
        goes before it). Every array arrives with exactly its own dtype (byte order, fields,
        offsets, ``align``, metadata).
        Other objects are pickled with the standard library's pickle (protocol 5, arrays inside
        them out-of-band, never copied into the pickle stream). Order is kept per (sender,
        receiver, tag), arrays and other objects mixed. ``dest`` may be this node itself.

        This is ``distrcomp.send`` once MPI is initialised.

        Raises ValueError if ``dest`` is not in ``range(n_node)`` or ``tag`` is negative or too large;
        TypeError, naming the type, if ``obj`` cannot be pickled (raised before anything is sent).
        A KeyboardInterrupt (or a signal handler's exception) while ``send`` waits propagates; the
        message is still delivered, so an array being sent must then not be changed until it is.
        Any thread may call ``send``; order is kept per (sending thread, receiver, tag).
        """
        # The full checks (which also accept any integer-like value) only when the quick ones fail.
        d = _quick_int(dest)
        t = _quick_int(tag)
        if not 0 <= d < self.n_node:
            self.check_node("send: dest", dest)
            d = _index(dest)
        if not 0 <= t <= self.max_tag:
            self.check_tag("send", tag)
            t = _index(tag)
        if not self._threads:
            self.check_thread("send")
        # Posted under the lock, waited for (a large array's data) after it.
        unsent: object = _NOT_SENT
        if type(obj) is _ndarray:
            self._lock_state()
            try:
                if self._repeats(d, obj):
                    unsent = self._send_repeat(d, t, obj)
            finally:
                self._unlock_state()
        if unsent is _NOT_SENT:
            frame, payloads, owned = encode(obj)
            self._lock_state()
            try:
                if is_array_frame(frame):  # forgotten until posted: an interrupted send must not leave it
                    self._dtypes_to[d] = None
                    unsent = self._post(d, t, frame, payloads, owned)
                    self._note_head(d, obj, frame)
                else:
                    unsent = self._post(d, t, frame, payloads, owned)
            finally:
                self._unlock_state()
        if unsent is not None:
            self._await_payloads(d, t, unsent)

    @cython.cfunc
    def _repeats(self, dest: cython.int, array: Any) -> cython.bint:
        """Whether ``array`` has the dtype (the same object), shape and memory order of the last
        array head sent to ``dest``: then its data alone describes it (``REPEAT``). An array
        that is C-contiguous goes in C order (as ``wire.encode`` sends it), else one that is
        Fortran-contiguous in Fortran order; any other is not repeated."""
        if cython.compiled:
            a: cnp.ndarray = array
            if cython.cast(object, cnp.PyArray_DESCR(a)) is not self._dtypes_to[dest]:
                return False
            shape: tuple = self._shapes_to[dest]
            nd: cython.int = cnp.PyArray_NDIM(a)
            if len(shape) != nd:
                return False
            dims = cnp.PyArray_DIMS(a)
            i: cython.int
            for i in range(nd):
                if cython.cast(cnp.npy_intp, shape[i]) != dims[i]:
                    return False
            if self._fortran_to[dest]:
                return cnp.PyArray_IS_F_CONTIGUOUS(a) and not cnp.PyArray_IS_C_CONTIGUOUS(a)
            return cnp.PyArray_IS_C_CONTIGUOUS(a)
        if array.dtype is not self._dtypes_to[dest] or array.shape != self._shapes_to[dest]:
            return False
        flags = array.flags
        if self._fortran_to[dest]:
            return flags.f_contiguous and not flags.c_contiguous
        return flags.c_contiguous

    @cython.cfunc
    def _note_head(self, dest: cython.int, obj: Any, frame: bytes) -> cython.int:
        """Remember the array head just sent to ``dest`` for :meth:`_repeats` (or forget the
        last one: the receiver keeps only the last array head). Not one that pickles its dtype:
        such a dtype may be changed in place (``dtype.names = ...``), so an array of it is
        never described by an earlier head."""
        if type(obj) is _ndarray and obj.nbytes <= _REPEAT_MAX and not has_pickled_dtype(frame):
            flags = obj.flags
            self._dtypes_to[dest] = obj.dtype
            self._shapes_to[dest] = obj.shape
            self._fortran_to[dest] = flags.f_contiguous and not flags.c_contiguous
        else:
            self._dtypes_to[dest] = None
            self._shapes_to[dest] = None
        return 0

    @cython.cfunc
    def _send_repeat(self, dest: cython.int, tag: cython.long, array: Any) -> object:
        """Send ``array``'s data alone, in its memory order, as ``REPEAT``: copied when it is
        small (``send`` returns at once), else from the array's memory, to be waited for (see
        :meth:`_post_payloads`, whose result this returns). Called holding the lock."""
        mtag: cython.int = tag << _KIND_BITS | REPEAT
        self._sent[dest] += 1
        if self._profile:
            self._note_sent(dest, tag, array.nbytes)
        if cython.compiled:
            a: cnp.ndarray = array
            n: cython.Py_ssize_t = cnp.PyArray_NBYTES(a)
            if n <= FRAME_MAX:  # copied into the scratch buffer, sent from there
                scratch: bytearray = self._scratch
                if len(scratch) < n:
                    scratch = self._scratch = bytearray(n)
                memcpy(PyByteArray_AS_STRING(scratch), cnp.PyArray_DATA(a), n)
                request = self._isend_raw(PyByteArray_AS_STRING(scratch), n, dest, mtag)
                if request is not None:  # MPI still reads it: it stays with the request
                    self._keep(request, scratch, dest)
                    self._scratch = bytearray(0)
                return None
        elif array.nbytes <= FRAME_MAX:
            self._isend_kept(array.tobytes("A"), dest, mtag)  # in memory order, C or Fortran
            return None
        return self._post_payloads(dest, mtag, [array.ravel("K").view(np.uint8)], False)

    @cython.cfunc
    def _post(self, dest: cython.int, tag: cython.long, frame: bytes, payloads: list,
              owned: cython.bint) -> object:
        """Start sending an encoded message: the frame, then its payloads (see ``encode``).
        Called holding the lock; returns what :meth:`_post_payloads` returns (or None)."""
        mtag: cython.int = tag << _KIND_BITS | (BARE if frame[0] == BARE_PICKLE else FRAMED)
        self._sent[dest] += 1
        if self._profile:
            self._note_sent(dest, tag, len(frame) + sum(memoryview(p).nbytes for p in payloads))
        self._isend_kept(frame, dest, mtag)
        if payloads:
            return self._post_payloads(dest, mtag | PAYLOAD, payloads, owned)
        return None

    @cython.cfunc
    def _note_sent(self, dest: cython.int, tag: cython.long, nbytes: cython.Py_ssize_t) -> cython.int:
        self._msgs_to[dest] += 1
        self._bytes_to[dest] += nbytes
        if self._profile == 2:
            self._on_send(dest, tag, nbytes)
        return 0

    @cython.cfunc
    def _isend_kept(self, buffer: Any, dest: cython.int, mtag: cython.int) -> cython.int:
        """Start sending ``buffer``, which nothing else refers to; kept until MPI is done."""
        request = self._isend(buffer, dest, mtag)
        if request is not None:
            self._keep(request, buffer, dest)
        return 0

    @cython.cfunc
    def _isend(self, buffer: Any, dest: cython.int, mtag: cython.int) -> object:
        """Start sending the bytes of ``buffer``; None if MPI completed the send at once, else
        its request."""
        if cython.compiled and type(buffer) is bytes:  # every frame: no buffer to ask for
            return self._isend_raw(PyBytes_AS_STRING(buffer), len(buffer), dest, mtag)
        request = self.comm.Isend(buffer, dest, mtag)
        return None if request.Test() else request

    if cython.compiled:
        @cython.cfunc
        def _isend_raw(self, data: cython.p_void, nbytes: cython.Py_ssize_t, dest: cython.int,
                       mtag: cython.int) -> object:
            """``MPI_Isend`` of ``nbytes`` at ``data``, tested once: None if completed, else the
            request (the caller keeps the memory alive until it completes)."""
            req: MPI_Request
            flag: cython.int = 0
            _check(MPI_Isend(data, cython.cast(cython.int, nbytes), MPI_BYTE, dest, mtag,
                             self._handle, cython.address(req)))
            _check(MPI_Test(cython.address(req), cython.address(flag), MPI_STATUS_IGNORE))
            if flag:
                return None
            request: cMPI.Request = cMPI.Request.__new__(cMPI.Request)
            request.ob_mpi = req
            return request

    @cython.cfunc
    def _post_payloads(self, dest: cython.int, mtag: cython.int, payloads: list,
                       owned: cython.bint) -> object:
        """Start sending ``payloads``; None when they are the engine's own (kept until sent),
        else ``(requests, payloads)`` for :meth:`_await_payloads` (after the lock is let go)."""
        comm = self.comm
        requests = [comm.Isend(payload, dest, mtag) for payload in payloads]
        if owned:
            for request, payload in zip(requests, payloads):
                self._keep(request, payload, dest)
            return None
        return requests, payloads

    def _await_payloads(self, dest: int, tag: int, unsent: tuple) -> None:
        """Wait until the payloads :meth:`_post_payloads` started are sent (the caller's memory)."""
        requests, payloads = unsent
        index: cython.Py_ssize_t
        self._op, self._peer, self._tag = OP_SEND, dest, tag
        self._nbytes = sum(memoryview(payload).nbytes for payload in payloads)
        for index in range(len(requests)):
            try:
                self.wait(requests[index])
            except BaseException:  # an interrupt: the payloads still go; keep them alive until sent
                self._lock_state()
                try:
                    for late, payload in zip(requests[index:], payloads[index:]):
                        self._keep(late, payload, dest)
                finally:
                    self._unlock_state()
                raise

    @cython.cfunc
    def _keep(self, request: Any, buffer: Any, dest: cython.int) -> cython.int:
        """Keep ``buffer`` alive until ``request`` (sending it) completes. Holding the lock."""
        self._pending.append((request, buffer, dest, self._sent[dest]))
        if len(self._pending) >= self._purge_at:
            self._purge()
        return 0

    def _purge(self) -> None:
        MPI.Request.Testsome([entry[0] for entry in self._pending])
        # A completed request is MPI_REQUEST_NULL now (false), whether completed by this test
        # or by another: one kept by an interrupted wait (_abandon) is also tested there, and
        # once it completed there Testsome never named it again, so it stayed here for ever.
        self._pending = [entry for entry in self._pending if entry[0]]
        self._purge_at = max(64, 2 * len(self._pending))

    # -------------------------------------------------------------------- wait
    def wait(self, request: Any, *keep: Any) -> None:
        """Block until ``request`` completes, queueing every message that arrives meanwhile.

        First tests the request alone ``_SPIN_POLLS`` times (most waits end there: a payload
        being read by its receiver), then polls the request and the probe and gives the core
        away between polls. ``MPI_Waitany`` (and any loop of tests) never yields, so with more
        nodes than cores, or on a loaded machine, the node that has to make progress waits a
        whole time slice for its core (measured with MPICH, allreduce of 8 MiB on 4 nodes on 2
        cores: 26 ms with Waitany, 7.5 ms like this, 8.5 ms for a plain ``MPI_Wait``, which
        cannot accept messages meanwhile).

        An exception from a signal handler (Ctrl-C's KeyboardInterrupt) propagates, and the
        operation goes on in MPI: the request and the buffers in ``keep`` (those MPI may still
        use that the request does not hold itself: mpi4py's reduction requests do not hold their
        receive buffer) are then kept by the engine (see :meth:`_abandon`).

        Any thread may wait; messages are taken by whichever thread is taking (see the module
        docstring), by this one when none is.
        """
        if not self._threads:
            self.check_thread("wait")
        try:
            for _ in range(_SPIN_POLLS):
                if request.Test():
                    return
            self._since = _now()
            while not request.Test():
                if not self._accept():
                    if self._n_finished and self._op == OP_COLLECTIVE:
                        self._check_collective()
                    _yield_core()
                    if cython.compiled:  # compiled code runs no signal handler by itself
                        PyErr_CheckSignals()
        except BaseException:
            self._recover_locks()
            self._lock_state()
            try:
                self._abandon(request, keep)
            finally:
                self._unlock_state()
            raise
        finally:
            if self._since:
                self._blocked_until_now()

    def _recover_locks(self) -> None:
        """After an exception from a signal handler (Ctrl-C's KeyboardInterrupt) in :meth:`wait`,
        in the plain-Python build: let go of the engine's locks if this thread still owns one.
        The exception may have come between taking it and the ``try`` that lets it go, and
        :meth:`wait` never runs holding either. (The compiled build runs no signal handler
        there.)"""
        if not cython.compiled:
            for lock in (self._taking, self._lock):
                if lock._is_owned():
                    lock._release_save()

    def _abandon(self, request: Any, keep: tuple) -> None:
        """Keep ``request`` and the buffers in ``keep`` alive: a wait for them was interrupted,
        and MPI may still use the buffers (a collective goes on once the other nodes join it).
        Otherwise the request would be freed while active (erroneous for a collective) and a
        buffer could go back to :mod:`distrcomp.buffers` and be handed out while MPI writes it.
        Those already completed are dropped here. Holding the lock."""
        self._interrupted = [entry for entry in self._interrupted if not entry[0].Test()]
        self._interrupted.append((request, keep))

    # ----------------------------------------------------------------- receive
    @cython.cfunc
    def _accept(self) -> cython.bint:
        """Take one message that has arrived into the queue, unless another thread is taking
        (see the module docstring); True if one was taken."""
        if not self._start_taking():
            return False
        try:
            if not self._probe(False):
                return False
            self._enqueue(self._take_entry())
            return True
        finally:
            self._release_taking()

    @cython.cfunc
    def _enqueue(self, entry: tuple) -> cython.int:
        """Queue a message the taker took (before it lets go of taking: arrival order is kept).
        An exit notice is not queued (taking it marked its node finished); the threads waiting
        are woken all the same, since what they wait for may now be impossible."""
        if entry[2] is _FINISHED:
            if self._waiting:
                self._wake()
            return 0
        self._lock_state()
        try:
            self._queue.append(entry)
        finally:
            self._unlock_state()
        if self._waiting:
            self._wake()
        return 0

    @cython.cfunc
    def _take_until(self, src: cython.long, tag: cython.long, remove: cython.bint,
                    block: cython.bint, what: str) -> object:
        """As the taker, take messages until one from ``src`` with ``tag`` comes and return it
        (queued too unless ``remove``), queueing the others; without ``block``, return None
        once no more has arrived. Raises DistrCompError (``what`` naming the caller) once an
        exit notice makes the message impossible (see :meth:`_check_finished`)."""
        while self._probe(block):
            entry = self._take_entry()
            if entry[2] is _FINISHED:
                self._check_finished(src, tag, what)
                continue
            if (src < 0 or entry[0] == src) and (tag < 0 or entry[1] == tag):
                if not remove:
                    self._enqueue(entry)
                return entry
            self._enqueue(entry)
        return None

    @cython.cfunc
    def _probe(self, block: cython.bint) -> cython.bint:
        """Find the next message from any node with any tag (waiting for one if ``block``):
        sets ``_src``, ``_mtag``, ``_count`` and the matched message; False if none is here.
        Only the taker calls this, and what follows up to the decoded message (see the module
        docstring)."""
        if cython.compiled:
            flag: cython.int = 1
            n: cython.int = 0
            msg: MPI_Message
            st: MPI_Status
            ierr: cython.int
            spins: cython.int = _PROBE_SPINS if block else 1
            while True:  # a few probes holding the GIL: the next message is often just coming
                ierr = MPI_Improbe(MPI_ANY_SOURCE, MPI_ANY_TAG, self._handle, cython.address(flag),
                                   cython.address(msg), cython.address(st))
                spins -= 1
                if ierr or flag or spins <= 0:
                    break
            if block and not ierr and not flag:
                flag = 1
                self._since = _now()  # costs nothing: no message is here
                with cython.nogil:  # let other threads run while MPI waits
                    ierr = MPI_Mprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, self._handle,
                                      cython.address(msg), cython.address(st))
                self._blocked_until_now()
            _check(ierr)
            if not flag:
                return False
            _check(MPI_Get_count(cython.address(st), MPI_BYTE, cython.address(n)))
            self._msg = msg
            self._src = st.MPI_SOURCE
            self._mtag = st.MPI_TAG
            self._count = n
            return True
        status = self._status
        improbe = self.comm.improbe
        message = improbe(_MPI_ANY_SOURCE, _MPI_ANY_TAG, status)
        if message is None:
            if not block:
                return False
            for _ in range(_PROBE_SPINS - 1):  # as above
                message = improbe(_MPI_ANY_SOURCE, _MPI_ANY_TAG, status)
                if message is not None:
                    break
            else:
                self._since = _now()
                message = self.comm.mprobe(_MPI_ANY_SOURCE, _MPI_ANY_TAG, status)
                self._blocked_until_now()
        self._message = message
        self._src = status.Get_source()
        self._mtag = status.Get_tag()
        self._count = status.Get_count()
        return True

    @cython.cfunc
    def _blocked_until_now(self) -> cython.int:
        """A blocking probe returned: this node is no longer blocked (and the profile hears how
        long it was)."""
        if self._profile:
            now: cython.double = _now()
            self._blocked[self._op] += now - self._since
            if self._profile == 2:
                self._on_block(self._op, self._peer, self._tag, self._since, now)
        self._since = 0.0
        return 0

    @cython.cfunc
    def _mrecv(self, buffer: Any) -> cython.int:
        """Receive the probed message into the writable ``buffer`` (of its size or more)."""
        if cython.compiled:
            if type(buffer) is _ndarray:  # made by _Head.new_array: contiguous, its own memory
                return self._mrecv_raw(cnp.PyArray_DATA(buffer), cnp.PyArray_NBYTES(buffer))
            buf: Py_buffer
            PyObject_GetBuffer(buffer, cython.address(buf), PyBUF_SIMPLE | PyBUF_WRITABLE)
            try:
                return self._mrecv_raw(buf.buf, buf.len)
            finally:
                PyBuffer_Release(cython.address(buf))
        self._message.Recv([buffer, _BYTE])
        return 0

    if cython.compiled:
        @cython.cfunc
        def _mrecv_raw(self, data: cython.p_void, nbytes: cython.Py_ssize_t) -> cython.int:
            """``MPI_Mrecv`` of the probed message into ``nbytes`` at ``data``."""
            return _check(MPI_Mrecv(data, cython.cast(cython.int, nbytes), MPI_BYTE,
                                    cython.address(self._msg), MPI_STATUS_IGNORE))

    @cython.cfunc
    def _mrecv_bytes(self) -> object:
        """Receive the probed message into a new buffer of its size (for ``pickle.loads``)."""
        if cython.compiled:
            data: bytes = PyBytes_FromStringAndSize(cython.NULL, self._count)
            self._mrecv_raw(PyBytes_AS_STRING(data), self._count)
            return data
        buffer = bytearray(self._count)
        self._message.Recv([buffer, _BYTE])
        return buffer

    @cython.cfunc
    def _take(self) -> object:
        """Receive the message :meth:`_probe` found and decode it, receiving its payloads: the
        object (``_src`` and ``_mtag`` say whose and which). An undecodable message is returned
        as an ``_Undecodable`` (the ``recv`` that asks for it raises); an MPI error propagates."""
        src: cython.int = self._src
        tag: cython.long = self._mtag >> _KIND_BITS
        kind: cython.int = self._mtag & _KIND_MASK
        self._n_received += 1
        if self._profile:
            self._msgs_from[src] += 1
            self._bytes_from[src] += self._count
            if self._profile == 2 and (self._count or kind != BARE):  # not an exit notice
                self._on_take(src, tag, self._count)
        if kind == REPEAT:
            return self._take_repeat(src, tag)
        if kind == BARE:
            data = self._mrecv_bytes()
            if self._count == 0:  # an empty pickle: the exit notice of node src (close)
                return self._note_finished(src, tag)
            try:
                return _loads(data)
            except Exception as exc:  # noqa: BLE001 - kept; the recv that asks for this message raises it
                return _undecodable(src, tag, exc)
        frame = bytearray(self._count)
        self._mrecv(frame)
        return self._decode(frame, src, tag)

    @cython.cfunc
    def _note_finished(self, src: cython.int, collectives: cython.long) -> object:
        if not self._finished[src]:
            self._finished[src] = True
            self._n_finished += 1
            self._collectives_of[src] = collectives
        if self._profile:
            self._msgs_from[src] -= 1
        return _FINISHED

    @cython.cfunc
    def _check_collective(self) -> cython.int:
        """Raise DistrCompError if a node that has finished never called the collective this
        node waits in (it had called fewer collectives than this one's number): the collective
        can never complete."""
        src: cython.int
        for src in range(self.n_node):
            if self._finished[src] and self._collectives_of[src] < self._n_collective:
                raise DistrCompError(
                    f"{self._collective} #{self._n_collective}: node {self.node_id} waits for every "
                    f"node to call it, but node {src} has finished after calling "
                    f"{self._collectives_of[src]} collective(s)")
        return 0

    @cython.cfunc
    def _check_finished(self, src: cython.long, tag: cython.long, what: str) -> cython.int:
        """Raise DistrCompError if what ``recv`` (or ``what``) waits for can never come: ``src``
        has finished, or (``ANY_SOURCE``) every other node has; the queue holds no match."""
        if src >= 0 and self._finished[src]:
            raise DistrCompError(
                f"{what}: node {self.node_id} waits for a message from node {src} with "
                f"{_which(tag)}, but node {src} has finished and sent no such message")
        if src < 0 and self._n_finished >= self.n_node - 1 and self.n_node > 1:
            raise DistrCompError(
                f"{what}: node {self.node_id} waits for a message from any node with "
                f"{_which(tag)}, but every other node has finished and sent no such message")
        return 0

    @cython.cfunc
    def _take_entry(self) -> tuple:
        """:meth:`_take`, as the queue entry ``(src, tag, obj)``."""
        obj = self._take()
        return self._src, self._mtag >> _KIND_BITS, obj

    @cython.cfunc
    def _take_repeat(self, src: cython.int, tag: cython.long) -> object:
        """The probed ``REPEAT`` message from ``src``: the array the last array head from
        ``src`` describes, received into it. When that head could not be decoded, or none came
        (which distrcomp never sends), the data is still received and the message is
        undecodable."""
        head = self._heads_from[src]
        known: _Head = head if type(head) is _Head else None  # typed: no cast, in either build
        if known is None or known.nbytes != self._count:
            self._mrecv(bytearray(self._count))
            if head is None or known is not None:
                head = ValueError(f"an array without an array head before it ({self._count} bytes)")
            return _undecodable(src, tag, head)
        try:
            array = known.new_array()
        except Exception as exc:  # noqa: BLE001 - the data is still received; the recv that asks raises
            self._mrecv(bytearray(self._count))
            return _undecodable(src, tag, exc)
        self._mrecv(array)
        return array

    @cython.cfunc
    def _decode(self, frame: bytearray, src: cython.int, tag: cython.long) -> object:
        """The object of a ``FRAMED`` frame received from ``src`` with ``tag``, its payloads
        received, or an ``_Undecodable``. An array head is kept as the head of ``REPEAT``
        messages from ``src`` (even if it cannot be decoded: then neither can they)."""
        if is_array_frame(frame):
            if has_pickled_dtype(frame):  # its sender never repeats it (see Engine._note_head)
                self._heads_from[src] = None
            else:
                try:
                    dtype, shape, order, nbytes, _ = describe(frame)
                    self._heads_from[src] = _Head(dtype, shape, order, nbytes)
                except Exception as exc:  # noqa: BLE001 - decode raises it again below
                    self._heads_from[src] = exc
        self._fill_src = src
        self._fill_mtag = tag << _KIND_BITS | PAYLOAD
        try:
            return decode(frame, self._fill_payload, True)
        except Exception as exc:  # noqa: BLE001 - kept; the recv that asks for this message raises it
            return _undecodable(src, tag, exc)

    def _fill(self, buffer: Any) -> None:
        """Receive the next payload of the frame being decoded into ``buffer``."""
        self.comm.Recv(buffer, self._fill_src, self._fill_mtag)
        if self._profile:
            self._bytes_from[self._fill_src] += memoryview(buffer).nbytes

    # -------------------------------------------------------------------- recv
    @cython.cfunc
    def _match(self, src: cython.int, tag: cython.long, remove: cython.bint) -> object:
        """The first queued message from ``src`` with ``tag`` (removed if ``remove``), or None.
        Holding the lock."""
        queue = self._queue
        for index, entry in enumerate(queue):
            if (src < 0 or entry[0] == src) and (tag < 0 or entry[1] == tag):
                if remove:
                    del queue[index]
                return entry
        return None

    @cython.annotation_typing(False)  # the checks below raise the documented errors
    @cython.locals(s=cython.long, t=cython.long)
    def recv(self, src: int, tag: int = ANY_TAG, timeout: float | None = None) -> Any:
        """Return the next message from node ``src`` (``ANY_SOURCE``: from any node) with ``tag``.

        Blocking; while it waits it keeps accepting every node's messages. Messages from one node
        with one tag arrive in the order they were sent. ``timeout`` in seconds (None: wait forever;
        0: only what has arrived) raises TimeoutError naming the awaited node and tag; a message
        that arrives later is still there for the next ``recv``. The returned object is the
        receiver's own (arrays are new, writable arrays).

        This is ``distrcomp.recv`` once MPI is initialised.

        Raises ValueError for a ``src`` outside ``range(n_node)`` (other than ``ANY_SOURCE``), a bad
        ``tag`` or a negative (or NaN) ``timeout``; TypeError for a ``timeout`` that is not a number;
        MessageDecodeError if the message arrived but cannot be unpickled here.
        Any thread may call ``recv``; each message is returned by exactly one call.
        """
        s = _quick_int(src)
        t = _quick_int(tag)
        if not _ANY_SOURCE <= s < self.n_node:
            self.check_node("recv: src", src, allow_any=True)
            s = _index(src)
        if not _ANY_TAG <= t <= self.max_tag:
            self.check_tag("recv", tag, allow_any=True)
            t = _index(tag)
        if timeout is not None:
            self.check_timeout("recv", timeout)
        if not self._threads:
            self.check_thread("recv")
        # The usual case: nothing queued, no other thread taking; this one blocks in MPI for the
        # next frame, and most often it is the one.
        if timeout is None and not self._queue and self._start_taking():
            obj = _NOT_SENT
            try:
                if not self._queue:  # none queued by another thread meanwhile
                    self._op, self._peer, self._tag = OP_RECV, s, t
                    if self._n_finished:
                        self._check_finished(s, t, "recv")
                    self._probe(True)
                    obj = self._take()
                    if obj is _FINISHED or not (
                            (s < 0 or self._src == s) and (t < 0 or self._mtag >> _KIND_BITS == t)):
                        self._enqueue((self._src, self._mtag >> _KIND_BITS, obj))
                        obj = _NOT_SENT
            finally:
                self._release_taking()
            if obj is not _NOT_SENT:
                if type(obj) is _Undecodable:
                    raise obj.error
                return obj
        self._op, self._peer, self._tag = OP_RECV, s, t
        entry = self._await(s, t, timeout, True, "recv")
        obj = entry[2]
        if type(obj) is _Undecodable:
            raise obj.error
        return obj

    @cython.annotation_typing(False)  # the checks below raise the documented errors
    def receive(self, src: int, tag: int, timeout: float | None, remove: bool = True,
                what: str = "recv") -> tuple[int, int, Any]:
        """Block until a message from ``src`` with ``tag`` is here; return ``(src, tag, obj)``.

        With ``remove=False`` the message stays queued (a probe). Raises TimeoutError after
        ``timeout`` seconds; nothing is lost then. TypeError or ValueError for a ``timeout``
        that is not None or a number of seconds >= 0. ``what`` names the caller in errors.
        """
        self.check_timeout(what, timeout)
        if not self._threads:
            self.check_thread(what)
        self._op, self._peer, self._tag = OP_RECV if remove else OP_PROBE, src, tag
        entry = self._await(src, tag, timeout, remove, what)
        obj = entry[2]
        if remove and type(obj) is _Undecodable:
            raise obj.error
        return entry

    @cython.annotation_typing(False)  # the checks below raise the documented errors
    def _await(self, src: int, tag: int, timeout: float | None, remove: bool, what: str
               ) -> tuple[int, int, Any]:
        """Return the first message from ``src`` with ``tag``, queued or to come: from the queue,
        else taking messages from MPI when no other thread is (blocking in MPI when there is no
        timeout), else waiting for the thread that is. Raises TimeoutError after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        if deadline is None:  # the blocking probe counts the time blocked itself
            return self._await_loop(src, tag, timeout, remove, what, deadline)
        self._since = _now()
        try:
            return self._await_loop(src, tag, timeout, remove, what, deadline)
        finally:
            self._blocked_until_now()

    @cython.annotation_typing(False)  # the timeout as the caller gave it, in the message
    def _await_loop(self, src: int, tag: int, timeout: float | None, remove: bool, what: str,
                    deadline: float | None) -> tuple[int, int, Any]:
        """:meth:`_await`'s loop, until ``deadline`` (monotonic seconds) or without one."""
        delay = 2e-5
        while True:
            # Under the state lock: the message is queued, or this thread becomes the taker, or
            # it waits on _arrived, counted before the lock is let go (so that a taker that
            # queues a message or stops taking after this check wakes it).
            self._lock_state()
            try:
                entry = self._match(src, tag, remove)
                if entry is not None:
                    return entry
                self._check_finished(src, tag, what)
                taking = self._start_taking()
                if not taking:
                    remaining = None
                    if deadline is not None:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            raise self._timed_out(src, tag, timeout, what)
                    self._arrived.acquire()
                    self._waiting += 1
            finally:
                self._unlock_state()
            if not taking:
                try:
                    self._arrived.wait(remaining)
                finally:
                    self._waiting -= 1
                    self._arrived.release()
                continue
            try:
                entry = self._take_until(src, tag, remove, deadline is None, what)
            finally:
                self._release_taking()
            if entry is not None:
                return entry
            remaining = deadline - time.monotonic()
            if remaining <= 0:  # everything arrived so far was taken, and none of it matched
                raise self._timed_out(src, tag, timeout, what)
            time.sleep(min(delay, remaining))
            delay = min(2 * delay, 1e-3)

    @cython.annotation_typing(False)  # the timeout as the caller gave it, in the message
    def _timed_out(self, src: int, tag: int, timeout: float, what: str) -> TimeoutError:
        return TimeoutError(f"{what}: node {self.node_id} waited {timeout} s for a message from "
                            f"{_who(src)} with {_which(tag)}; none arrived")

    # -------------------------------------------------------------------- exit
    def close(self) -> None:
        """Deliver what is in flight, then stop receiving. Called once, at interpreter exit.

        1. Wait for this node's own sends to complete, accepting messages meanwhile, for at
           most ``DISTRCOMP_EXIT_TIMEOUT`` seconds (default 10); then warn on stderr, naming the
           destination nodes and counts still pending.
        2. Learn how many messages were sent to this node in all (a reduce-scatter of every
           node's per-destination counts, so this waits until every node has reached exit, as
           ``MPI_Finalize`` would, but accepting messages meanwhile).
        3. Accept messages until every message sent here has arrived; then every send of this
           node has been matched, so waiting for them to complete cannot hang, and MPI never
           finalizes while still reading a buffer that Python is about to free.
        4. Warn about messages that arrived here but were never received, by sender and tag.
        """
        if self._closed:
            return
        self._closed = True
        self._op = OP_EXIT
        self._lock_state()
        try:
            # the exit notice: an empty BARE message to each node, whose tag says how many
            # collectives this node called (_check_collective)
            notice: cython.int = (min(self._n_collective, self.max_tag) << _KIND_BITS) | BARE
            for dest in range(self.n_node):
                if dest != self.node_id:
                    self._sent[dest] += 1
                    self._isend_kept(b"", dest, notice)
        finally:
            self._unlock_state()
        self._flush_pending()
        # Reduce-scatter, not alltoall: MPICH's Ialltoall on one rank sends on the user's context.
        self._lock_state()
        try:
            sent = np.array(self._sent, np.int64)
        finally:
            self._unlock_state()
        expected = np.zeros(1, np.int64)
        self.wait(self._exit_comm.Ireduce_scatter_block(sent, expected, MPI.SUM), sent, expected)
        while self._n_received < expected[0]:
            if self._start_taking():  # block in MPI for the next message
                try:
                    if self._n_received < expected[0]:
                        self._probe(True)
                        self._enqueue(self._take_entry())
                finally:
                    self._release_taking()
            else:  # another thread is taking: it counts what it takes
                with self._arrived:
                    self._waiting += 1
                    try:
                        self._arrived.wait(0.01)
                    finally:
                        self._waiting -= 1
        self._lock_state()
        try:
            pending, self._pending = self._pending, []
        finally:
            self._unlock_state()
        MPI.Request.Waitall([entry[0] for entry in pending])
        self._report_unreceived()

    def _flush_pending(self) -> None:
        limit = _exit_timeout()
        deadline = time.monotonic() + limit
        while True:
            self._lock_state()
            try:
                if not self._pending or MPI.Request.Testall([entry[0] for entry in self._pending]):
                    self._pending = []
                    return
            finally:
                self._unlock_state()
            if self._accept():
                continue
            if time.monotonic() >= deadline:
                break
            time.sleep(1e-3)
        self._lock_state()
        try:
            self._purge()
        finally:
            self._unlock_state()
        if self._pending:
            messages = {(entry[2], entry[3]) for entry in self._pending}
            counts = Counter(dest for dest, _ in messages)
            where = ", ".join(f"{n} to node {d}" for d, n in sorted(counts.items()))
            _warn(
                f"node {self.node_id} is exiting with sends still pending after {limit:g} s "
                f"({where}); nobody has received them yet, waiting for every node to exit"
            )

    def _report_unreceived(self) -> None:
        self._lock_state()
        try:
            self._warn_unreceived()
        finally:
            self._unlock_state()

    def _warn_unreceived(self) -> None:
        if self._queue:
            counts = Counter((entry[0], entry[1]) for entry in self._queue)
            where = ", ".join(f"{n} from node {s} (tag {t})" for (s, t), n in sorted(counts.items()))
            _warn(f"node {self.node_id} is exiting with {len(self._queue)} message(s) never received: {where}")
            self._queue.clear()


_NOT_SENT = object()  # send and recv: "not done yet" (None is a result)


def _undecodable(src: int, tag: int, exc: BaseException) -> _Undecodable:
    """What stands for a message that arrived but could not be decoded (``exc``)."""
    return _Undecodable(MessageDecodeError(src, tag, f"{type(exc).__name__}: {exc}"))


def new_engine(comm: Any) -> Engine:
    """The engine for ``comm``; one per process."""
    return Engine(comm)


def _yield_core() -> None:
    """Let another runnable process have this core (returns at once if there is none)."""
    if _SCHED_YIELD is not None:
        _SCHED_YIELD()
    else:
        time.sleep(0)


_SCHED_YIELD = getattr(os, "sched_yield", None)  # missing on macOS, where sleep(0) yields


def _exit_timeout() -> float:
    raw = os.environ.get("DISTRCOMP_EXIT_TIMEOUT", "")
    try:
        return float(raw) if raw.strip() else _EXIT_TIMEOUT
    except ValueError:
        _warn(f"DISTRCOMP_EXIT_TIMEOUT={raw!r} is not a number of seconds; using {_EXIT_TIMEOUT:g}")
        return _EXIT_TIMEOUT


def _warn(text: str) -> None:
    sys.stderr.write(f"distrcomp: warning: {text}\n")
    sys.stderr.flush()

"""The point-to-point engine behind ``send``, ``recv`` and ``probe``.

Design, in one paragraph: every message is a frame plus payloads (see :mod:`distrcomp.wire`),
sent on distrcomp's private communicator with MPI tag ``4*tag + kind``: kind ``FRAMED`` for a
frame with a head, ``PAYLOAD`` for its payloads, ``BARE`` for a bare pickle frame (most small
objects; the compiled engine has mpi4py's ``isend`` pickle and send the plain ones in one call),
which is then received and unpickled by mpi4py in one call (``Message.recv``), and
``REPEAT`` for an array's payload sent without its frame: the frame would have been the same
head as the last array head (a frame followed by one payload) sent to that node, which the
receiver keeps per node (so a loop sending one shape sends one message per array, as
``Send`` would, instead of a head and a payload; measured on MPICH with 1 MiB arrays, the head
cost 2% of the transfer). Payloads of more than ``_REPEAT_MAX`` bytes always get their head.
Frames are taken with a matched probe from any node with any tag (``improbe``/``mprobe`` then
``Mrecv``). Every blocking call (``send`` of a large array,
``recv``, the collectives, the exit handler) keeps taking frames while it waits for what it
is waiting for, and decodes each (its payloads received at once) into an arrival-ordered queue
that ``recv`` consults first. So a node blocked in distrcomp always accepts incoming messages, and a ring where every
node sends a large array before receiving cannot deadlock.

``send`` keeps value semantics without copying large arrays: a frame is a fresh ``bytes``, and
when payloads are views of the caller's memory, ``send`` returns only once MPI has completed
them. When nothing refers to the caller's memory, ``send`` returns at once and MPI completes
the sends in the background.

Two engines speak this protocol: :class:`Engine`, in Python, and the one :func:`new_engine`
makes when ``distrcomp._hotpath`` was built, a subclass whose ``send`` and ``recv`` are compiled
for the common messages and hand the rest to Engine's methods (see ``distrcomp/_hotpath.c``).
The compiled one makes the MPI calls of small messages itself when ``distrcomp._mpicalls_<abi>``
was built for the MPI in use (:func:`mpi_calls`), else through mpi4py, as the Python one does.

Why a payload can never be mistaken for a frame: a node receives a frame's payloads right after
the frame, before it probes again, and MPI does not let messages between two nodes overtake
each other; so the next message from a node that an any-tag probe matches is always a frame
(or a ``REPEAT`` payload, which stands for one). For the same reason a node takes the array
heads from each node in the order they were sent, so the head it keeps for a node when a
``REPEAT`` arrives is the one its sender compared with.

Why a probe and not a receive kept posted for any node: with MPICH's UCX device between hosts,
a posted any-source receive together with large sends in both directions hangs (reproduced in
raw mpi4py: tests/cluster/programs/p2p_pattern.py); matched probes do not. ``Probe`` then
``Recv`` from the node and tag it found would also be correct here (one thread on a private
communicator: nothing else can take the probed message), but it is not cheaper: measured with
Open MPI and MPICH, the any-source probe is what costs, matched or not.
"""

from __future__ import annotations

import functools
import importlib
import numbers
import os
import sys
import time
from collections import Counter, deque
from typing import Any

import numpy as np

from .errors import MessageDecodeError
from .tags import ANY_SOURCE, ANY_TAG
from .wire import BARE_PICKLE, FRAME_MAX, decode, encode, is_payload_head, pickle_frame

__all__ = ["Engine", "compiled", "mpi_calls", "new_engine"]

# The MPI tag of a message of tag t is t << _KIND_BITS | kind (see the module docstring).
FRAMED, PAYLOAD, BARE, REPEAT = 0, 1, 2, 3
_KIND_BITS, _KIND_MASK = 2, 3
_REPEAT_MAX = (1 << 31) - 1  # bytes: a larger payload is always sent after its head (C int counts)

_SPIN_POLLS = 64  # tests of a request alone before wait also takes frames and yields (_hotpath.c too)
_EXIT_TIMEOUT = 10.0  # seconds the exit handler waits for this node's sends before warning


class _Undecodable:
    """Stands in the queue for a message that arrived but could not be decoded."""

    __slots__ = ("error",)

    def __init__(self, error: MessageDecodeError) -> None:
        self.error = error


def _who(src: int) -> str:
    return "any node" if src == ANY_SOURCE else f"node {src}"


def _which(tag: int) -> str:
    return "any tag" if tag == ANY_TAG else f"tag {tag}"


class Engine:
    """Point-to-point messaging on one communicator. One instance per process (see ``world``)."""

    def __init__(self, comm: Any) -> None:
        from mpi4py import MPI

        self._MPI = MPI
        self.comm = comm
        self.node_id = comm.Get_rank()
        self.n_node = comm.Get_size()
        self.max_tag = (MPI.COMM_WORLD.Get_attr(MPI.TAG_UB) - 3) >> _KIND_BITS
        self._mpi_error = MPI.Exception
        self._closed = False
        self._status = MPI.Status()
        self._any_source, self._any_tag = MPI.ANY_SOURCE, MPI.ANY_TAG
        self._queue: deque[tuple[int, int, Any]] = deque()
        self._pending: list[tuple[Any, Any, int, int]] = []  # (request, buffer kept alive, dest, nth)
        self._interrupted: list[tuple[Any, tuple[Any, ...]]] = []  # see _abandon
        self._purge_at = 64
        self._sent = [0] * self.n_node  # messages sent to each node, for the exit handshake
        self._heads_to: list[bytes | None] = [None] * self.n_node  # last array head sent to each node
        self._heads_from: list[bytes | None] = [None] * self.n_node  # and received from each (REPEAT)
        self._n_received = 0  # frames taken, from any node
        self._payloads_from = (0, PAYLOAD)  # (node, MPI tag) of the payloads decode is reading now
        self._fill_payload = self._fill  # bound once: every frame passes it to decode

    # ------------------------------------------------------------------ checks
    def check_node(self, what: str, node: int, allow_any: bool = False) -> None:
        """Raise ValueError unless ``node`` is a node id (or ANY_SOURCE when allowed)."""
        if type(node) is not int and not hasattr(node, "__index__"):
            raise TypeError(f"{what} must be an int node id, got {type(node).__name__}")
        if allow_any and node == ANY_SOURCE:
            return
        if not 0 <= node < self.n_node:
            raise ValueError(f"{what}={node} but n_node={self.n_node} (node ids are 0..{self.n_node - 1})")

    def check_tag(self, what: str, tag: int, allow_any: bool = False) -> None:
        """Raise ValueError unless ``0 <= tag <= max_tag`` (or ANY_TAG when allowed)."""
        if type(tag) is not int and not hasattr(tag, "__index__"):
            raise TypeError(f"{what}: tag must be an int, got {type(tag).__name__}")
        if allow_any and tag == ANY_TAG:
            return
        if not 0 <= tag <= self.max_tag:
            raise ValueError(f"{what}: tag={tag} is outside 0..{self.max_tag}")

    @staticmethod
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

    # -------------------------------------------------------------------- send
    def send(self, dest: int, obj: Any, tag: int = 0) -> None:
        """See :func:`distrcomp.send`."""
        # The full checks (which also accept any integer-like value) only when the quick ones fail.
        if type(dest) is not int or not 0 <= dest < self.n_node:
            self.check_node("send: dest", dest)
        if type(tag) is not int or not 0 <= tag <= self.max_tag:
            self.check_tag("send", tag)
        self._post(dest, tag, *encode(obj))

    _send_py = send  # what the compiled engine calls for the messages it leaves to Python

    def _send_stream(self, dest: int, tag: int, stream: bytes, out_of_band: list[Any]) -> None:
        """Send an object the compiled engine has pickled into ``stream`` and ``out_of_band``
        buffers but that is not one bare pickle frame (see :func:`wire.pickle_frame`)."""
        self._post(dest, tag, *pickle_frame(stream, out_of_band))

    def _post(self, dest: int, tag: int, frame: bytes, payloads: list[Any], owned: bool) -> None:
        """Start sending an encoded message: the frame, then its payloads (see ``encode``); or
        only the payload, as ``REPEAT``, when the frame is the array head last sent to ``dest``."""
        mtag = tag << _KIND_BITS | (BARE if frame[0] == BARE_PICKLE else FRAMED)
        head = payloads and is_payload_head(frame)
        if head and frame == self._heads_to[dest] and payloads[0].nbytes <= _REPEAT_MAX:
            self._sent[dest] += 1
            self._send_payloads(dest, tag << _KIND_BITS | REPEAT, payloads, owned)
            return
        sent = self._sent[dest] = self._sent[dest] + 1
        pending = self._pending  # what _keep does, inline: this is every message's path
        pending.append((self.comm.Isend(frame, dest, mtag), frame, dest, sent))
        if head:
            self._heads_to[dest] = frame
        if len(pending) >= self._purge_at:
            self._purge()
        if payloads:
            self._send_payloads(dest, mtag | PAYLOAD, payloads, owned)

    def _send_payloads(self, dest: int, mtag: int, payloads: list[Any], owned: bool) -> None:
        comm = self.comm
        requests = [comm.Isend(payload, dest, mtag) for payload in payloads]
        if owned:
            for request, payload in zip(requests, payloads):
                self._keep(request, payload, dest)
            return
        for index, request in enumerate(requests):
            try:
                self.wait(request)
            except BaseException:  # an interrupt: the payloads still go; keep them alive until sent
                for late, payload in zip(requests[index:], payloads[index:]):
                    self._keep(late, payload, dest)
                raise

    def _keep(self, request: Any, buffer: Any, dest: int) -> None:
        pending = self._pending
        pending.append((request, buffer, dest, self._sent[dest]))
        if len(pending) >= self._purge_at:
            self._purge()

    def _purge(self) -> None:
        done = self._MPI.Request.Testsome([entry[0] for entry in self._pending]) or []
        if done:
            finished = set(done)
            self._pending = [e for i, e in enumerate(self._pending) if i not in finished]
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
        """
        try:
            for _ in range(_SPIN_POLLS):
                if request.Test():
                    return
            status = self._status
            improbe = self.comm.improbe
            any_source, any_tag = self._MPI.ANY_SOURCE, self._MPI.ANY_TAG
            while not request.Test():
                message = improbe(any_source, any_tag, status)
                if message is None:
                    _yield_core()
                else:
                    self._queue.append(self._take_frame(message, status))
        except BaseException:
            self._abandon(request, keep)
            raise

    def _abandon(self, request: Any, keep: tuple[Any, ...]) -> None:
        """Keep ``request`` and the buffers in ``keep`` alive: a wait for them was interrupted,
        and MPI may still use the buffers (a collective goes on once the other nodes join it).
        Otherwise the request would be freed while active (erroneous for a collective) and a
        buffer could go back to :mod:`distrcomp.buffers` and be handed out while MPI writes it.
        Those already completed are dropped here."""
        self._interrupted = [entry for entry in self._interrupted if not entry[0].Test()]
        self._interrupted.append((request, keep))

    def _take_frame(self, message: Any, status: Any) -> tuple[int, int, Any]:
        """Receive the frame ``message`` (from ``mprobe``/``improbe``, which set ``status``) and
        decode it, receiving its payloads: the queue entry ``(src, tag, obj)``.

        A bare pickle frame is received and unpickled by mpi4py (``Message.recv``). Any other
        frame gets a buffer of its own, of its exact size, given away to ``decode``: a small
        array is then returned on that buffer, not copied out of a shared one. An undecodable
        message is kept as such; an MPI error propagates.
        """
        src = status.Get_source()
        mtag = status.Get_tag()
        self._n_received += 1
        if mtag & _KIND_MASK == REPEAT:
            return self._take_repeat(message, src, mtag, status.Get_count())
        if mtag & _KIND_MASK != BARE:
            frame = bytearray(status.Get_count())
            message.Recv(frame)
            return self._decode_entry(frame, src, mtag)
        try:
            return src, mtag >> _KIND_BITS, message.recv()
        except self._mpi_error:
            raise
        except Exception as exc:  # noqa: BLE001 - kept; the recv that asks for this message raises it
            return self._undecodable_entry(src, mtag, exc)

    def _decode_entry(self, frame: bytearray, src: int, mtag: int) -> tuple[int, int, Any]:
        """The queue entry ``(src, tag, obj)`` of a ``FRAMED`` frame received from ``src`` with
        MPI tag ``mtag``, its payloads received; an undecodable message is kept as such.
        An array head is kept as the head of ``REPEAT`` payloads from ``src`` (even if it
        cannot be decoded: then neither can they, and they are kept as such too)."""
        if is_payload_head(frame):
            self._heads_from[src] = bytes(frame)
        self._payloads_from = (src, mtag | PAYLOAD)
        try:
            obj = decode(frame, self._fill_payload, True)
        except Exception as exc:  # noqa: BLE001 - kept; the recv that asks for this message raises it
            return self._undecodable_entry(src, mtag, exc)
        return src, mtag >> _KIND_BITS, obj

    def _take_repeat(self, message: Any, src: int, mtag: int, nbytes: int) -> tuple[int, int, Any]:
        """The queue entry ``(src, tag, obj)`` of the ``REPEAT`` payload ``message`` of
        ``nbytes`` bytes from ``src``: the array its last array head describes, received from
        ``message``. When that cannot be decoded, or no head came from ``src`` before (which
        distrcomp never sends), the payload is still received and the message kept as
        undecodable; an MPI error propagates."""
        head = self._heads_from[src]
        filled = []

        def fill(buffer: Any) -> None:
            filled.append(True)
            message.Recv(buffer)

        try:
            if head is None:
                raise ValueError(f"an array payload from node {src} without an array head before it")
            obj = decode(head, fill, True)
        except self._mpi_error:
            raise
        except Exception as exc:  # noqa: BLE001 - kept; the recv that asks for this message raises it
            if not filled:
                message.Recv(bytearray(nbytes))
            return self._undecodable_entry(src, mtag, exc)
        return src, mtag >> _KIND_BITS, obj

    def _undecodable_entry(self, src: int, mtag: int, exc: BaseException) -> tuple[int, int, Any]:
        """The queue entry of a message that arrived but could not be decoded (``exc``)."""
        tag = mtag >> _KIND_BITS
        return src, tag, _Undecodable(MessageDecodeError(src, tag, f"{type(exc).__name__}: {exc}"))

    def _fill(self, buffer: Any) -> None:
        """Receive the next payload of the frame being decoded into ``buffer``."""
        src, mtag = self._payloads_from
        self.comm.Recv(buffer, src, mtag)

    # -------------------------------------------------------------------- recv
    def _match(self, src: int, tag: int, remove: bool) -> tuple[int, int, Any] | None:
        queue = self._queue
        if not queue:
            return None
        for index, entry in enumerate(queue):
            if (src < 0 or entry[0] == src) and (tag < 0 or entry[1] == tag):
                if remove:
                    del queue[index]
                return entry
        return None

    def recv(self, src: int, tag: int, timeout: float | None) -> Any:
        """See :func:`distrcomp.recv`."""
        if type(src) is not int or not ANY_SOURCE <= src < self.n_node:
            self.check_node("recv: src", src, allow_any=True)
        if type(tag) is not int or not ANY_TAG <= tag <= self.max_tag:
            self.check_tag("recv", tag, allow_any=True)
        if timeout is not None:
            self.check_timeout("recv", timeout)
        # What receive() does, inline: this is every message's path.
        entry = self._match(src, tag, True) if self._queue else None
        if entry is None:
            if timeout is None:  # block in MPI for the next frame, and most often it is the one
                status = self._status
                entry = self._take_frame(self.comm.mprobe(self._any_source, self._any_tag, status), status)
                if not ((src < 0 or entry[0] == src) and (tag < 0 or entry[1] == tag)):
                    self._queue.append(entry)
                    entry = self._await(src, tag, None, True)
            else:
                entry = self._await(src, tag, timeout, True)
        obj = entry[2]
        if type(obj) is _Undecodable:
            raise obj.error
        return obj

    _recv_py = recv  # what the compiled engine calls for the messages it leaves to Python

    def receive(self, src: int, tag: int, timeout: float | None, remove: bool = True,
                what: str = "recv") -> tuple[int, int, Any]:
        """Block until a message from ``src`` with ``tag`` is here; return ``(src, tag, obj)``.

        With ``remove=False`` the message stays queued (a probe). Raises TimeoutError after
        ``timeout`` seconds; nothing is lost then. TypeError or ValueError for a ``timeout``
        that is not None or a number of seconds >= 0. ``what`` names the caller in errors.
        """
        self.check_timeout(what, timeout)
        entry = self._match(src, tag, remove) if self._queue else None
        if entry is None:
            entry = self._await(src, tag, timeout, remove, what)
        obj = entry[2]
        if remove and type(obj) is _Undecodable:
            raise obj.error
        return entry

    def _await(self, src: int, tag: int, timeout: float | None, remove: bool, what: str = "recv"
               ) -> tuple[int, int, Any]:
        status = self._status
        any_source, any_tag = self._any_source, self._any_tag
        queue = self._queue
        if timeout is None:  # every recv's path: block in MPI until the next frame
            mprobe, take = self.comm.mprobe, self._take_frame
            while True:
                entry = take(mprobe(any_source, any_tag, status), status)
                if (src < 0 or entry[0] == src) and (tag < 0 or entry[1] == tag):
                    if not remove:
                        queue.append(entry)
                    return entry
                queue.append(entry)
        deadline = time.monotonic() + max(0.0, timeout)
        delay = 2e-5
        while True:
            message = self.comm.improbe(any_source, any_tag, status)
            if message is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{what}: node {self.node_id} waited {timeout} s for a message from "
                        f"{_who(src)} with {_which(tag)}; none arrived"
                    )
                time.sleep(min(delay, remaining))
                delay = min(2 * delay, 1e-3)
                continue
            entry = self._take_frame(message, status)
            if (src < 0 or entry[0] == src) and (tag < 0 or entry[1] == tag):
                if not remove:
                    queue.append(entry)
                return entry
            queue.append(entry)

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
        self._flush_pending()
        # Reduce-scatter, not alltoall: MPICH's Ialltoall on one rank sends on the user's context.
        sent = np.array(self._sent, np.int64)
        expected = np.zeros(1, np.int64)
        self.wait(self.comm.Ireduce_scatter_block(sent, expected, self._MPI.SUM), sent, expected)
        status = self._status
        while self._n_received < expected[0]:
            message = self.comm.mprobe(self._MPI.ANY_SOURCE, self._MPI.ANY_TAG, status)
            self._queue.append(self._take_frame(message, status))
        self._MPI.Request.Waitall([entry[0] for entry in self._pending])
        self._pending = []
        self._report_unreceived()

    def _flush_pending(self) -> None:
        MPI = self._MPI
        limit = _exit_timeout()
        deadline = time.monotonic() + limit
        status = self._status
        while self._pending:
            requests = [entry[0] for entry in self._pending]
            if MPI.Request.Testall(requests):
                self._pending = []
                return
            message = self.comm.improbe(MPI.ANY_SOURCE, MPI.ANY_TAG, status)
            if message is not None:
                self._queue.append(self._take_frame(message, status))
                continue
            if time.monotonic() >= deadline:
                break
            time.sleep(1e-3)
        self._purge()
        if self._pending:
            messages = {(entry[2], entry[3]) for entry in self._pending}
            counts = Counter(dest for dest, _ in messages)
            where = ", ".join(f"{n} to node {d}" for d, n in sorted(counts.items()))
            _warn(
                f"node {self.node_id} is exiting with sends still pending after {limit:g} s "
                f"({where}); nobody has received them yet, waiting for every node to exit"
            )

    def _report_unreceived(self) -> None:
        if self._queue:
            counts = Counter((entry[0], entry[1]) for entry in self._queue)
            where = ", ".join(f"{n} from node {s} (tag {t})" for (s, t), n in sorted(counts.items()))
            _warn(f"node {self.node_id} is exiting with {len(self._queue)} message(s) never received: {where}")
            self._queue.clear()


def new_engine(comm: Any) -> Engine:
    """The engine for ``comm``: compiled (see :func:`compiled`) or pure Python; one per process."""
    if not compiled():
        return Engine(comm)
    from . import _hotpath, buffers, wire

    engine = _compiled_engine_class()(comm)
    MPI = engine._MPI
    engine._attach(wire._c_heads, wire._payload_heads, wire._described, FRAME_MAX, engine._any_source,
                   engine._any_tag, engine._mpi_error, buffers.block, buffers._cache.blocks,
                   MPI.Datatype.fromcode("B"))  # what mpi4py sends a uint8 array (a payload) as
    calls = _mpicalls_module(MPI)
    if calls is not None:
        engine._use_mpicalls(calls.api, MPI.Request.fromhandle, MPI.Message.fromhandle, MPI.pickle.loads)
    _hotpath.register(engine)  # what distrcomp.send and recv call from now on
    return engine


def mpi_calls() -> bool:
    """True when this process's compiled engine makes its small messages' MPI calls itself.

    That is, ``distrcomp._mpicalls_<abi>`` was built at install for an MPI of the ABI
    (MPICH's or Open MPI's) that mpi4py loaded here, and the environment does not set
    ``DISTRCOMP_MPICALLS=0``; otherwise the compiled engine makes them through mpi4py's
    Python-level objects (~0.9 us more per 8-byte message on Open MPI). Initialises MPI if it
    was not yet. False with the Python engine.
    """
    from . import _get

    return bool(getattr(_get().engine, "_mpicalls", False))


def _mpi_abi(MPI: Any) -> str | None:
    """"mpich" or "openmpi": the ABI of the MPI library mpi4py has loaded; None for others."""
    suffix = os.path.basename(MPI.__file__).split(".")[1]  # mpi4py's wheels: MPI.<abi>.<ext>
    if suffix in ("mpich", "openmpi"):
        return suffix
    vendor = MPI.get_vendor()[0]  # an mpi4py built for one MPI
    return {"MPICH": "mpich", "Intel MPI": "mpich", "MVAPICH": "mpich", "Open MPI": "openmpi"}.get(vendor)


def _mpicalls_module(MPI: Any) -> Any:
    """``distrcomp._mpicalls_<abi>`` for the loaded MPI, or None: not built for this ABI, or
    ``DISTRCOMP_MPICALLS=0``. Imported only now: its libmpi must be the one already loaded."""
    if os.environ.get("DISTRCOMP_MPICALLS", "").strip().lower() in ("0", "no", "false", "off"):
        return None
    abi = _mpi_abi(MPI)
    if abi is None:
        return None
    name = f"{__package__}._mpicalls_{abi}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        return None


def compiled() -> bool:
    """True when this process's engine uses the compiled hot path (``distrcomp._hotpath``).

    False when the extension was not built at install (no C compiler there: the install goes
    on without it) or the environment sets ``DISTRCOMP_PURE_PYTHON=1``. Both engines behave
    the same and talk to each other; the compiled one spends less time per small message.
    """
    from . import _compiled

    return _compiled()


@functools.cache
def _compiled_engine_class() -> type[Engine]:
    from ._hotpath import Core

    class CompiledEngine(Core, Engine):  # type: ignore[misc, valid-type]
        """Engine with ``send`` and ``recv`` from ``_hotpath.Core`` (its other methods from Engine)."""

    return CompiledEngine


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

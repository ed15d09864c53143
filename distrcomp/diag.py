"""What a node tells the launcher about itself: where it is blocked, and its profile.

**The report** (``distrcomp run`` asks for it at ``--timeout`` and when the launcher gets
``SIGUSR1``): the launcher's order reaches every Python process of the node as ``SIGUSR1``. A
thread of this module, blocked on the read end of Python's signal wake-up fd
(``signal.set_wakeup_fd``) and nothing else, then writes one line to the process's stderr,
which the launcher reads: :data:`MARK`, ``report``, a space and a JSON object::

    {"node": 1, "call": {"op": "recv", "peer": 0, "tag": -1, "for": 12.3, ...} or null,
     "held": [[src, tag, count], ...], "finished": [nodes whose exit notice arrived],
     "stack": "the main thread's Python stack"}

The launcher shows the call as the stack's innermost line: with the compiled engine the
stack ends at the program's own line (the engine's functions have no Python frames).

``call`` is what the engine records where a call blocks (:mod:`distrcomp.p2p`, ``Engine._op``
and the attributes after it): nothing is stored on a call's path until it has to wait, so the
record costs nothing when idle and almost nothing per message. A thread, because the main
thread may be blocked in MPI (a probe without the GIL) and would run a Python signal handler
only once a message comes; and the wake-up fd, because the kernel may deliver the signal to
any thread (numpy's and MPI's own included), whereas Python's C-level handler writes the
signal's number to that fd whichever thread runs it. A program that sets its own wake-up fd
(``asyncio``'s ``add_signal_handler``), before distrcomp's initialisation or after, keeps it:
its nodes then do not report.

**The profile** (``--stats``, ``--trace``: the launcher sets ``DISTRCOMP_PROFILE`` to
``stats`` or ``trace``): the engine counts messages and bytes per node and the seconds blocked
per call; with ``trace`` it also calls back for every message sent or arrived and every time
the node was blocked. At exit, after the exit handshake, the node writes one line: :data:`MARK`,
``profile``, a space and a JSON object (see :func:`profile_record`).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any

from .launcher.reports import MARK

__all__ = ["MARK", "OPS", "at_exit", "install", "profile_record", "report"]

OPS = {1: "send", 2: "recv", 3: "probe", 4: "collective", 5: "exit"}  # p2p.OP_*
ENV_PROFILE = "DISTRCOMP_PROFILE"
_SIGNAL = getattr(signal, "SIGUSR1", None)
_exit_hooks: list = []


def at_exit() -> None:
    """Write what the profile has to write; called after the engine's exit handshake."""
    for hook in _exit_hooks:
        hook()


def install(world: Any) -> None:
    """Answer ``SIGUSR1`` with a report, and start the profile if ``DISTRCOMP_PROFILE`` asks
    for one. Called at initialisation, from the main thread (else there is no report)."""
    mode = os.environ.get(ENV_PROFILE, "").strip()
    if mode in ("stats", "trace"):
        _Profile(world, mode == "trace")
    if _SIGNAL is None or threading.current_thread() is not threading.main_thread():
        return
    import socket

    wake_r, wake_w = socket.socketpair()
    wake_w.setblocking(False)
    try:
        previous = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    except ValueError:  # not the main thread of the main interpreter
        previous = None
    if previous != -1:  # the program has a wake-up fd of its own: it keeps it, no reports
        if previous is not None:
            signal.set_wakeup_fd(previous)
        wake_r.close()
        wake_w.close()
        return
    # A handler in SigCgt: the node's wrapper signals only processes that catch SIGUSR1. It
    # does nothing itself: the thread below, woken through the wake-up fd, writes the report.
    signal.signal(_SIGNAL, _ignore)
    threading.Thread(target=_answer, args=(world, wake_r, wake_w), name="distrcomp-report",
                     daemon=True).start()


def _ignore(_signum: int, _frame: object) -> None:
    """SIGUSR1's handler: the report is written by the thread that waits on the wake-up fd."""


def _answer(world: Any, wake_r: Any, wake_w: Any) -> None:
    """Wait for signals' numbers on the wake-up fd; write a report for each SIGUSR1."""
    while True:
        try:
            data = wake_r.recv(64)
        except OSError:
            return
        if not data:
            return
        if _SIGNAL in data:
            _write("report", report(world))


def report(world: Any) -> dict[str, Any]:
    """This node's report (see the module docstring); safe to call from any thread."""
    import traceback
    from collections import Counter

    engine = world.engine
    main = threading.main_thread()
    frame = sys._current_frames().get(main.ident) if main.is_alive() else None
    since = engine._since
    call = None
    if since:
        op = OPS.get(engine._op, "?")
        call = {"op": op, "peer": engine._peer, "tag": engine._tag,
                "for": round(max(0.0, time.monotonic() - since), 3)}
        if op == "send":
            call["bytes"] = engine._nbytes
        elif op == "collective":
            call["name"], call["seq"] = engine._collective, engine._n_collective
    held = Counter((entry[0], entry[1]) for entry in list(engine._queue))
    stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
    return {
        "node": world.node_id,
        "call": call,
        "held": [[src, tag, n] for (src, tag), n in sorted(held.items())],
        "finished": [node for node, done in enumerate(engine._finished) if done],
        "stack": stack,
    }


def _write(kind: str, record: dict[str, Any]) -> None:
    """One line on stderr, written by one ``write`` call where the pipe takes it whole."""
    import json

    data = MARK + kind.encode() + b" " + json.dumps(record, separators=(",", ":")).encode() + b"\n"
    try:
        sys.stderr.flush()
        view = memoryview(data)
        while view:
            view = view[os.write(2, view):]
    except OSError:
        pass  # nobody reads this node's stderr any more: the launcher is gone


class _Profile:
    """The counters (and with ``trace`` the events) of this node's profile; written at exit."""

    def __init__(self, world: Any, trace: bool) -> None:
        self.world = world
        self.start = time.monotonic()
        self.wall = time.time() - self.start  # monotonic -> wall clock, for the trace's time base
        self.events: list[tuple] = []
        self.seq_to = [0] * world.n_node
        self.seq_from = [0] * world.n_node
        if trace:
            world.engine.set_profile(self._sent, self._taken, self._blocked)
        else:
            world.engine.set_profile()
        _exit_hooks.append(self.write)

    def _sent(self, dest: int, tag: int, nbytes: int) -> None:
        self.seq_to[dest] += 1
        self.events.append(("post", time.monotonic(), dest, tag, nbytes, self.seq_to[dest]))

    def _taken(self, src: int, tag: int, nbytes: int) -> None:
        self.seq_from[src] += 1
        self.events.append(("arrive", time.monotonic(), src, tag, nbytes, self.seq_from[src]))

    def _blocked(self, op: int, peer: int, tag: int, t0: float, t1: float) -> None:
        name = self.world.engine._collective if op == 4 else OPS.get(op, "?")
        self.events.append((name, t0, peer, tag, t1 - t0, 0))

    def write(self) -> None:
        _write("profile", profile_record(self.world, self.start, self.wall, self.events))


def profile_record(world: Any, start: float, wall: float, events: list[tuple]) -> dict[str, Any]:
    """What a node writes at exit with ``--stats`` or ``--trace``: ``node``, ``run`` (seconds
    since initialisation), per node ``msgs_to``, ``bytes_to``, ``msgs_from``, ``bytes_from``
    (bytes as MPI moved them: an object's frame and payloads), ``blocked`` (seconds per call
    kind: send, recv, probe, collective, exit), ``wall`` (add to a monotonic time for the wall
    clock) and ``events`` (with ``--trace``: ``[kind, t, peer, tag, bytes or seconds, seq]``,
    kind ``post`` for a message sent, ``arrive`` for one that arrived, else the call this node
    was blocked in from ``t`` for that many seconds: ``send``, ``recv``, ``probe``, ``exit`` or
    a collective's name)."""
    engine = world.engine
    blocked = list(engine._blocked)
    return {
        "node": world.node_id,
        "run": time.monotonic() - start,
        "msgs_to": list(engine._msgs_to), "bytes_to": list(engine._bytes_to),
        "msgs_from": list(engine._msgs_from), "bytes_from": list(engine._bytes_from),
        "blocked": {name: blocked[op] for op, name in OPS.items()},
        "wall": wall,
        "events": events,
    }

"""What a node tells the launcher about itself: where it is blocked, and its profile.

**The report** (``distrcomp run`` asks for it at ``--timeout`` and when the launcher gets
``SIGUSR1``): the launcher's order reaches every Python process of the node as ``SIGUSR1``. A
thread of this module, waiting in ``sigwait`` and nothing else, then writes one line to the
process's stderr, which the launcher reads: :data:`MARK`, ``report``, a space and a JSON
object::

    {"node": 1, "call": {"op": "recv", "peer": 0, "tag": -1, "for": 12.3, ...} or null,
     "held": [[src, tag, count], ...], "finished": [nodes whose exit notice arrived],
     "stack": "the main thread's Python stack"}

The launcher shows the call as the stack's innermost line: with the compiled engine the
stack ends at the program's own line (the engine's functions have no Python frames).

``call`` is what the engine records where a call blocks (:mod:`distrcomp.p2p`, ``Engine._op``
and the attributes after it): nothing is stored on a call's path until it has to wait, so the
record costs nothing when idle and almost nothing per message. A thread, because the main
thread may be blocked in MPI (a probe without the GIL) and run no signal handler until a
message comes. ``SIGUSR1`` is blocked in every thread of the process that MPI and distrcomp
start (the mask is set before MPI's initialisation), so that the waiting thread takes it;
should it reach a thread that does not block it, the main thread's handler writes the same
report.

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

__all__ = ["MARK", "OPS", "at_exit", "block_report_signal", "install", "profile_record", "report"]

OPS = {1: "send", 2: "recv", 3: "probe", 4: "collective", 5: "exit"}  # p2p.OP_*
ENV_PROFILE = "DISTRCOMP_PROFILE"
_SIGNAL = getattr(signal, "SIGUSR1", None)
_exit_hooks: list = []


def at_exit() -> None:
    """Write what the profile has to write; called after the engine's exit handshake."""
    for hook in _exit_hooks:
        hook()


def block_report_signal() -> bool:
    """Block ``SIGUSR1`` in the calling thread (and so in every thread it starts after, MPI's
    own included). Called before MPI's initialisation; True if done (the main thread only)."""
    if _SIGNAL is None or threading.current_thread() is not threading.main_thread():
        return False
    signal.pthread_sigmask(signal.SIG_BLOCK, {_SIGNAL})
    return True


def install(world: Any, blocked: bool) -> None:
    """Answer ``SIGUSR1`` with a report, and start the profile if ``DISTRCOMP_PROFILE`` asks
    for one. ``blocked``: :func:`block_report_signal` succeeded."""
    mode = os.environ.get(ENV_PROFILE, "").strip()
    if mode in ("stats", "trace"):
        _Profile(world, mode == "trace")
    if not blocked:
        return

    def handler(_signum: int, _frame: object) -> None:
        _write("report", report(world))

    signal.signal(_SIGNAL, handler)  # in SigCgt: the node's wrapper sends only to handlers
    threading.Thread(target=_answer, args=(world,), name="distrcomp-report", daemon=True).start()


def _answer(world: Any) -> None:
    while True:
        signal.sigwait({_SIGNAL})
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

"""MPI initialisation on first use: node_id, n_node, the communicators, abort on error.

Importing distrcomp does not initialise MPI (the launcher imports the package and must never
call ``MPI_Init``). The first use of ``node_id``, ``n_node``, ``comm``, ``send``, ``recv`` or a
collective calls :func:`get`, which initialises MPI through mpi4py. That first use is
collective: every node must reach it, as with ``MPI_Init`` itself.

At initialisation distrcomp also

* initialises MPI through mpi4py, which asks for ``MPI_THREAD_MULTIPLE`` unless the program
  lowered ``mpi4py.rc.thread_level`` (or initialised MPI itself): with it any thread may send
  and receive; below it, the engine refuses calls from other threads than this one (``p2p``);
* duplicates ``COMM_WORLD`` into a private communicator, so that its messages and a user's
  direct mpi4py calls (even ``recv(source=ANY_SOURCE)``) never see each other;
* installs a ``sys.excepthook`` and a ``threading.excepthook`` that, when ``n_node > 1``, print
  the traceback and then call ``MPI_Abort`` so that the other nodes do not wait forever for a
  node that died, whichever thread raised (a ``SystemExit`` in a thread other than the main
  one ends only that thread, as in Python). A program that ends by ``sys.exit(N)``,
  ``exit(N)`` or ``quit(N)`` in its main thread with N not 0 (or a message) aborts the same
  way, with N as the error code (as mpi4py's ``python -m mpi4py`` does); under ``distrcomp
  run``, a bare ``raise SystemExit(N)`` too (see :mod:`distrcomp.runscript`). Set the
  environment variable ``DISTRCOMP_ABORT_ON_ERROR=0`` to opt out of both;
* answers ``SIGUSR1`` (the launcher sends it at ``--timeout`` and when asked) with a report of
  where this node is blocked, its held messages and its stack (see :mod:`distrcomp.diag`), and
  keeps the profile that ``distrcomp run --stats`` / ``--trace`` ask for;
* registers an exit handler that delivers what is still in flight (see ``p2p.Engine.close``).
"""

from __future__ import annotations

import atexit
import os
import stat
import struct
import sys
import threading
import time
from typing import Any, NamedTuple

__all__ = ["World", "get", "initialized"]


class World(NamedTuple):
    """What initialisation produced; one instance per process."""

    MPI: Any  # the mpi4py.MPI module
    comm: Any  # MPI.COMM_WORLD, the user's
    private: Any  # distrcomp's own duplicate of COMM_WORLD
    node_id: int
    n_node: int
    engine: Any  # p2p.Engine


_world: World | None = None
_initialising = threading.Lock()  # two threads' first uses must not both initialise


def initialized() -> bool:
    """True once :func:`get` has initialised MPI in this process."""
    return _world is not None


def get() -> World:
    """Return the process's :class:`World`, initialising MPI on the first call (collective;
    from any thread: a second thread's first use waits for the first one's)."""
    global _world
    if _world is None:
        with _initialising:
            if _world is None:
                _world = _init()
    return _world


def _init() -> World:
    from mpi4py import MPI

    from . import diag
    from .p2p import new_engine

    comm = MPI.COMM_WORLD
    private = comm.Dup()
    private.Set_name("distrcomp")
    world = World(MPI, comm, private, comm.Get_rank(), comm.Get_size(), new_engine(private))
    _install_excepthook(world)
    _watch_exits()
    diag.install(world)
    atexit.register(_at_exit, world)
    return world


def _abort_on_error() -> bool:
    return os.environ.get("DISTRCOMP_ABORT_ON_ERROR", "1").strip().lower() not in ("0", "no", "false", "off")


def _install_excepthook(world: World) -> None:
    previous = sys.excepthook
    previous_in_thread = threading.excepthook

    def excepthook(etype: type, value: BaseException, tb: Any) -> None:
        previous(etype, value, tb)
        _abort_job(world, f"raised {etype.__name__}", 1)

    def thread_excepthook(args: Any) -> None:
        previous_in_thread(args)
        if args.exc_type is not SystemExit:
            name = args.thread.name if args.thread is not None else "a thread"
            _abort_job(world, f"raised {args.exc_type.__name__} in thread {name!r}", 1)

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook


def _abort_job(world: World, what: str, code: int) -> None:
    """With more than one node (and unless DISTRCOMP_ABORT_ON_ERROR=0): say why on stderr, let
    the output drain, ``MPI_Abort`` every node with ``code``. Else return."""
    if world.n_node > 1 and _abort_on_error():
        sys.stderr.write(
            f"distrcomp: node {world.node_id} of {world.n_node} {what}; aborting every node "
            f"with code {code} (DISTRCOMP_ABORT_ON_ERROR=0 turns this off)\n"
        )
        sys.stderr.flush()
        sys.stdout.flush()
        _let_output_drain()
        _aborted.append(code)
        world.comm.Abort(code)


# Set once this process has called MPI_Abort: MPICH's MPI_Abort can return into Python's exit,
# whose exit handler must then do nothing (its exit notice would tell the other nodes, still
# alive until the MPI kills them, that this node finished normally).
_aborted: list[int] = []

# (the SystemExit raised by the last sys.exit / exit / quit, the outermost frame of its thread,
# that frame's last instruction then; or the SystemExit that ended the program, None, -1)
_exits: list[tuple[SystemExit, Any, int]] = []


def _watch_exits() -> None:
    """Make ``sys.exit``, ``exit`` and ``quit`` remember the SystemExit they raise, which the
    exit handler needs: Python tells it nothing of how the program ended. (A bare
    ``raise SystemExit(N)`` is seen only under ``distrcomp run``: :mod:`distrcomp.runscript`.)"""
    import builtins

    def exit(status: object = None) -> None:
        """Exit the interpreter by raising SystemExit(status) (distrcomp's ``sys.exit``: it
        also remembers it, see distrcomp.world)."""
        error = SystemExit(status)
        _remember(error)
        raise error

    sys.exit = exit
    for name in ("exit", "quit"):
        quitter = getattr(builtins, name, None)
        if quitter is not None:
            setattr(builtins, name, _Quitter(quitter))


def ended_by(error: SystemExit) -> None:
    """Tell the exit handler that ``error`` ended the program (:mod:`distrcomp.runscript` sees
    every SystemExit that reaches the script's top, however it was raised)."""
    _exits[:] = [(error, None, -1)]


def _remember(error: SystemExit) -> None:
    outermost = sys._getframe()
    while outermost.f_back is not None:
        outermost = outermost.f_back
    _exits[:] = [(error, outermost, outermost.f_lasti)]


class _Quitter:
    """``site``'s ``exit`` / ``quit`` that remembers the SystemExit it raises."""

    def __init__(self, quitter: Any) -> None:
        self._quitter = quitter

    def __repr__(self) -> str:
        return repr(self._quitter)

    def __call__(self, code: object = None) -> None:
        try:
            self._quitter(code)
        except SystemExit as error:
            _remember(error)
            raise


def _failed_exit() -> int:
    """The exit status (not 0) of the ``sys.exit`` / ``exit`` / ``quit`` that ended the program,
    or 0 if it ended otherwise. A SystemExit that was caught does not count: the outermost
    frame of the thread that raised it went on from where it was then (a SystemExit that ends
    the program stops every frame on its way, that one last)."""
    if not _exits:
        return 0
    error, outermost, lasti = _exits[0]
    if (outermost is not None and outermost.f_lasti != lasti) or error.code is None:
        return 0
    if isinstance(error.code, int):
        return error.code & 0xFF
    return 1  # a message, which Python prints before exiting with status 1


def _let_output_drain(limit: float = 1.0) -> None:
    """Wait (at most ``limit`` seconds) until whoever reads our stdout / stderr pipes has read
    what we wrote: MPI_Abort kills the processes of the job, and mpiexec then drops output still
    sitting in a pipe, which is often the very traceback that explains the abort."""
    import fcntl
    import termios

    deadline = time.monotonic() + limit
    for fd in (2, 1):
        try:
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                continue
            while time.monotonic() < deadline:
                unread = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]
                if unread == 0:
                    break
                time.sleep(0.005)
        except OSError:
            continue  # not a pipe we can ask: nothing to wait for
    time.sleep(0.05)  # and a moment for the reader to pass it on


def _at_exit(world: World) -> None:
    if world.MPI.Is_finalized() or _aborted:
        return
    status = _failed_exit()
    if status:
        # The others may wait in a collective or a recv for this node: they never would end.
        _abort_job(world, f"exited with status {status}", status)
        if _aborted:  # MPICH's MPI_Abort returned: no exit notice (see _aborted)
            return
    world.engine.close()
    from . import diag

    diag.at_exit()

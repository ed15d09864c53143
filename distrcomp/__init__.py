"""distrcomp: message passing between nodes with four names, on real MPI.

    import distrcomp as dc
    dc.send((dc.node_id + 1) % dc.n_node, {"hello": dc.node_id})
    print(dc.recv((dc.node_id - 1) % dc.n_node))

Run it with ``distrcomp run -n 4 prog.py`` (or ``mpiexec -n 4 python prog.py``); plain
``python prog.py`` is one node. Importing the package does not initialise MPI: the first use of
``node_id``, ``n_node``, ``comm`` or any function does, on every node (see ``distrcomp.world``).
"""

from __future__ import annotations

import os as _os

from .errors import DistrCompError, MessageDecodeError
from .tags import ANY_SOURCE, ANY_TAG

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (see _get)
if TYPE_CHECKING:
    from typing import Any

    from .world import World
del TYPE_CHECKING

__all__ = [
    "ANY_SOURCE",
    "ANY_TAG",
    "DistrCompError",
    "MessageDecodeError",
    "allgather",
    "allreduce",
    "barrier",
    "bcast",
    "comm",
    "gather",
    "n_node",
    "node_id",
    "probe",
    "recv",
    "recv_any",
    "reduce",
    "scatter",
    "send",
]

__version__ = "0.1.0"

node_id: int
n_node: int
comm: Any


try:
    from . import _hotpath  # the compiled hot path, built at install where a C compiler is found
except ImportError:
    _hotpath = None


def _pure_python() -> bool:
    """Whether the environment asks for no compiled code (``DISTRCOMP_PURE_PYTHON=1``): the
    Python engine in the nodes, the Python node wrapper in the launcher."""
    return _os.environ.get("DISTRCOMP_PURE_PYTHON", "").strip().lower() in ("1", "yes", "true", "on")


def _compiled() -> bool:
    """Whether this process uses the compiled hot path (see ``distrcomp.p2p.compiled``)."""
    return _hotpath is not None and not _pure_python()


_world: World | None = None  # set on first use, by _get
_engine: Any = None  # _world.engine, kept apart: every message's path reads it


def _get() -> World:
    """The process's World, initialising MPI on the first call. world (and typing with it) is
    imported only then: the launcher and its per-node wrapper, started once per node, import
    this package and never use it."""
    global _world, _engine
    if _world is None:
        from .world import get

        _world = get()
        _engine = _world.engine
    return _world


_COLLECTIVES = ("barrier", "bcast", "scatter", "gather", "allgather", "reduce", "allreduce")


def __getattr__(name: str) -> Any:
    # PEP 562: node_id, n_node and comm initialise MPI on first read, not at import; the
    # collectives (and numpy with them) load on first use, so that the launcher and its
    # per-node wrapper, which import this package, start fast.
    if name in _COLLECTIVES:
        from . import collectives

        return getattr(collectives, name)
    if name == "node_id":
        return _get().node_id
    if name == "n_node":
        return _get().n_node
    if name == "comm":
        return _get().comm
    raise AttributeError(f"module 'distrcomp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def send(dest: int, obj: Any, tag: int = 0) -> None:
    """Send ``obj`` to node ``dest``.

    Never waits for ``dest`` to call ``recv`` and never deadlocks against another node's
    ``send``: while it waits for MPI, it accepts incoming messages for later ``recv`` calls.
    Value semantics: once ``send`` returns, changing ``obj`` does not change what ``dest`` gets.
    numpy arrays travel as raw buffers, uncopied (dtype, shape and C/Fortran order kept; a
    non-contiguous array is copied once); a large array is handed to MPI in place, so ``send``
    returns when MPI has taken it, and goes as one MPI message of its data when its dtype,
    shape and order are those of the last such array sent to ``dest`` (else a small head
    goes before it). Other objects are pickled (protocol 5, arrays inside them
    out-of-band, never copied into the pickle stream; small objects made only of builtin
    scalars, str and bytes in dicts, lists and tuples are pickled by mpi4py's ``MPI.pickle``
    as it sends them). Order is kept per (sender, receiver, tag), arrays and other objects
    mixed. ``dest`` may be this node itself.

    Raises ValueError if ``dest`` is not in ``range(n_node)`` or ``tag`` is negative or too large;
    TypeError, naming the type, if ``obj`` cannot be pickled (raised before anything is sent).
    A KeyboardInterrupt (or a signal handler's exception) while ``send`` waits propagates; the
    message is still delivered, so an array being sent must then not be changed until it is.
    """
    (_engine or _get().engine).send(dest, obj, tag)


def recv(src: int, tag: int = ANY_TAG, timeout: float | None = None) -> Any:
    """Return the next message from node ``src`` (``ANY_SOURCE``: from any node) with ``tag``.

    Blocking; while it waits it keeps accepting every node's messages. Messages from one node
    with one tag arrive in the order they were sent. ``timeout`` in seconds (None: wait forever;
    0: only what has arrived) raises TimeoutError naming the awaited node and tag; a message
    that arrives later is still there for the next ``recv``. The returned object is the
    receiver's own (arrays are new, writable arrays).

    Raises ValueError for a ``src`` outside ``range(n_node)`` (other than ``ANY_SOURCE``), a bad
    ``tag`` or a negative (or NaN) ``timeout``; TypeError for a ``timeout`` that is not a number;
    MessageDecodeError if the message arrived but cannot be unpickled here.
    """
    return (_engine or _get().engine).recv(src, tag, timeout)


def recv_any(tag: int = ANY_TAG, timeout: float | None = None) -> tuple[int, Any]:
    """Like ``recv(ANY_SOURCE, tag, timeout)``, but return ``(src, obj)``: who sent it, and what."""
    engine = _engine or _get().engine
    engine.check_tag("recv_any", tag, allow_any=True)
    src, _, obj = engine.receive(ANY_SOURCE, tag, timeout, what="recv_any")
    return src, obj


def probe(src: int = ANY_SOURCE, tag: int = ANY_TAG, timeout: float | None = None) -> tuple[int, int]:
    """Block until a message from ``src`` with ``tag`` is available; return its ``(src, tag)``.

    The message is not consumed: the next ``recv`` that matches it returns it. ``timeout`` as
    for :func:`recv` (TimeoutError). Raises ValueError and TypeError as :func:`recv` does.
    """
    engine = _engine or _get().engine
    engine.check_node("probe: src", src, allow_any=True)
    engine.check_tag("probe", tag, allow_any=True)
    found_src, found_tag, _ = engine.receive(src, tag, timeout, remove=False, what="probe")
    return found_src, found_tag


if _compiled():
    # The same functions, compiled: once MPI is initialised they call the engine without a
    # Python frame in between; until then (and with keyword arguments) they call the ones above.
    send, recv = _hotpath.entry_points(send, recv, "(dest, obj, tag=0)", "(src, tag=ANY_TAG, timeout=None)")

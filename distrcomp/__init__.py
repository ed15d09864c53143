"""distrcomp: message passing between nodes with four names, on real MPI.

    import distrcomp as dc
    dc.send((dc.node_id + 1) % dc.n_node, {"hello": dc.node_id})
    print(dc.recv((dc.node_id - 1) % dc.n_node))

Run it with ``distrcomp run -n 4 prog.py`` (or ``mpiexec -n 4 python prog.py``); plain
``python prog.py`` is one node. Importing the package does not initialise MPI: the first use of
``node_id``, ``n_node``, ``comm`` or any function does, on every node (see ``distrcomp.world``).
"""

from __future__ import annotations

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
        # From now on distrcomp.send and recv are the engine's methods themselves: no Python
        # frame in between on every message's path (a name bound by `from distrcomp import
        # send` before this still works, through the function below). A program that put its
        # own function in their place keeps it.
        names = globals()
        for name, first in (("send", _first_send), ("recv", _first_recv)):
            if names[name] is first:
                names[name] = getattr(_engine, name)
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
    """Send ``obj`` to node ``dest``: see :meth:`distrcomp.p2p.Engine.send`.

    The first call initialises MPI; from then on ``distrcomp.send`` is that method itself.
    """
    (_engine or _get().engine).send(dest, obj, tag)


def recv(src: int, tag: int = ANY_TAG, timeout: float | None = None) -> Any:
    """Return the next message from node ``src``: see :meth:`distrcomp.p2p.Engine.recv`.

    The first call initialises MPI; from then on ``distrcomp.recv`` is that method itself.
    """
    return (_engine or _get().engine).recv(src, tag, timeout)


_first_send, _first_recv = send, recv


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



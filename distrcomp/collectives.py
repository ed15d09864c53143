"""Collective operations: barrier, bcast, scatter, gather, allgather, reduce, allreduce.

Every node must call the same collectives in the same order (MPI's rule). Each is blocking
and, while it waits, keeps accepting point-to-point messages (see :mod:`distrcomp.p2p`), so a
node that sent a large array before a collective is never left waiting. All run on distrcomp's
private communicator through MPI's nonblocking collectives.

Objects travel in the wire format of :mod:`distrcomp.wire`: numpy arrays as raw buffers
(``Ibcast`` / ``Igatherv`` / ``Iscatterv`` of their bytes), other objects pickled. ``reduce``
and ``allreduce`` of arrays with a native numeric dtype use MPI's own reduction
(``Iallreduce`` / ``Ireduce``); anything else is reduced in Python, in node order.

A collective that a node which has finished never called (its exit notice says how many it
called) raises :class:`~distrcomp.errors.DistrCompError` on the nodes waiting in it, naming
that node, instead of waiting forever.

Any thread may call a collective. One collective is several MPI collectives in a row, so a
node runs one at a time (a second thread's call waits for the first to end); which thread's
comes first is the program's to decide, and must give the same order on every node.
"""

from __future__ import annotations

import functools
import operator
import threading
from collections.abc import Sequence
from typing import Any, Callable, TypeVar, Union

import numpy as np

from . import buffers, wire
from .world import get

__all__ = ["allgather", "allreduce", "barrier", "bcast", "gather", "reduce", "scatter"]

Op = Union[str, Callable[[Any, Any], Any]]

_PY_OPS = {"sum": operator.add, "prod": operator.mul, "max": max, "min": min}

F = TypeVar("F", bound=Callable[..., Any])

_running = threading.RLock()  # held by the thread running a collective (reduce calls gather)


def _one_at_a_time(function: F) -> F:
    """``function``, run holding ``_running`` (see the module docstring)."""

    @functools.wraps(function)
    def collective(*args: Any, **kwargs: Any) -> Any:
        with _running:
            return function(*args, **kwargs)

    return collective  # type: ignore[return-value]


@_one_at_a_time
def barrier() -> None:
    """Block until every node has called ``barrier``."""
    world = get()
    world.engine.collective("barrier", -1)
    world.engine.wait(world.private.Ibarrier())


@_one_at_a_time
def bcast(obj: Any = None, root: int = 0) -> Any:
    """Return ``root``'s ``obj`` on every node; blocking.

    Non-root nodes get a copy (their own ``obj`` argument is ignored); ``root`` gets ``obj``
    itself. Arrays travel as raw buffers; the receivers need not know shape or dtype.
    Raises ValueError if ``root`` is not a node id; TypeError at root if ``obj`` cannot be pickled.
    """
    world = get()
    world.engine.check_node("bcast: root", root)
    world.engine.collective("bcast", root)
    comm, wait = world.private, world.engine.wait
    if world.n_node == 1:
        return obj
    if world.node_id == root:
        frame, payloads, _ = wire.encode(obj)
        wait(comm.Ibcast(np.array([len(frame)], np.int64), root))
        wait(comm.Ibcast(bytearray(frame), root))
        for payload in payloads:
            wait(comm.Ibcast(_writable(payload), root))
        return obj
    size = np.zeros(1, np.int64)
    wait(comm.Ibcast(size, root))
    frame = bytearray(int(size[0]))
    wait(comm.Ibcast(frame, root))
    return wire.decode(memoryview(frame), lambda buffer: wait(comm.Ibcast(buffer, root)))


def _writable(buffer: Any) -> Any:
    """MPI's broadcast wants a writable buffer even at root: copy a read-only one."""
    view = memoryview(buffer)
    return bytearray(view) if view.readonly else buffer


def _encode_flat(obj: Any) -> tuple:
    """``(frame, payload bytes)``: the payloads joined into one contiguous buffer."""
    frame, payloads, _ = wire.encode(obj)
    if len(payloads) == 1:
        return frame, _contiguous_bytes(payloads[0])
    return frame, np.frombuffer(b"".join(payloads), np.uint8)


def _contiguous_bytes(buffer: Any) -> np.ndarray:
    return np.frombuffer(memoryview(buffer).cast("B"), np.uint8)


def _decode_flat(frame: memoryview, data: memoryview) -> Any:
    offset = 0

    def fill(buffer: Any) -> None:
        nonlocal offset
        target = memoryview(buffer).cast("B")
        target[:] = data[offset : offset + target.nbytes]
        offset += target.nbytes

    return wire.decode(frame, fill)


def _gatherv(local: np.ndarray, root: int | None) -> list[memoryview] | None:
    """Gather each node's byte buffer to ``root`` (to all nodes when ``root`` is None)."""
    world = get()
    comm, wait, n = world.private, world.engine.wait, world.n_node
    counts = np.zeros(n, np.int64)
    mine = np.array([local.nbytes], np.int64)
    if root is None:
        wait(comm.Iallgather(mine, counts))
    else:
        wait(comm.Igather(mine, counts, root))
    if root is not None and world.node_id != root:
        wait(comm.Igatherv(local, None, root))
        return None
    displs = np.zeros(n, np.int64)
    np.cumsum(counts[:-1], out=displs[1:])
    out = np.empty(int(counts.sum()), np.uint8)
    spec = [out, (counts, displs), world.MPI.BYTE]
    if root is None:
        wait(comm.Iallgatherv(local, spec))
    else:
        wait(comm.Igatherv(local, spec, root))
    view = memoryview(out)
    return [view[d : d + c] for d, c in zip(displs.tolist(), counts.tolist())]


def _gather(obj: Any, root: int | None) -> list[Any] | None:
    frame, data = _encode_flat(obj)
    frames = _gatherv(np.frombuffer(frame, np.uint8), root)
    datas = _gatherv(data, root)
    if frames is None or datas is None:
        return None
    return [_decode_flat(f, d) for f, d in zip(frames, datas)]


@_one_at_a_time
def gather(obj: Any, root: int = 0) -> list[Any] | None:
    """Return, at ``root``, the list of every node's ``obj`` in node order; None elsewhere.

    Blocking; every item is a copy (also ``root``'s own). Raises ValueError for a bad ``root``,
    TypeError if ``obj`` cannot be pickled.
    """
    engine = get().engine
    engine.check_node("gather: root", root)
    engine.collective("gather", root)
    return _gather(obj, root)


@_one_at_a_time
def allgather(obj: Any) -> list[Any]:
    """Return, on every node, the list of every node's ``obj`` in node order (copies); blocking."""
    get().engine.collective("allgather", -1)
    result = _gather(obj, None)
    assert result is not None
    return result


@_one_at_a_time
def scatter(objs: Sequence[Any] | None = None, root: int = 0) -> Any:
    """Give node ``i`` a copy of ``objs[i]``, where ``objs`` is ``root``'s sequence; blocking.

    ``objs`` is read only at ``root`` and must have exactly ``n_node`` items there (a numpy array
    is split along its first axis). Raises ValueError for a bad ``root`` or a wrong length.
    """
    world = get()
    world.engine.check_node("scatter: root", root)
    world.engine.collective("scatter", root)
    _comm, _wait, n = world.private, world.engine.wait, world.n_node
    if world.node_id == root:
        if objs is None or len(objs) != n:
            got = "None" if objs is None else f"{len(objs)} items"
            raise ValueError(f"scatter: root {root} must pass exactly n_node={n} items, got {got}")
        parts = [_encode_flat(obj) for obj in objs]
        frames = [np.frombuffer(frame, np.uint8) for frame, _ in parts]
        datas = [data for _, data in parts]
    else:
        frames = datas = None
    frame = _scatterv(frames, root)
    data = _scatterv(datas, root)
    return _decode_flat(memoryview(frame), memoryview(data))


def _scatterv(pieces: list[np.ndarray] | None, root: int) -> np.ndarray:
    world = get()
    comm, wait = world.private, world.engine.wait
    mine = np.zeros(1, np.int64)
    if pieces is not None:
        counts = np.array([p.nbytes for p in pieces], np.int64)
        wait(comm.Iscatter(counts, mine, root))
        displs = np.zeros(len(counts), np.int64)
        np.cumsum(counts[:-1], out=displs[1:])
        send = np.concatenate(pieces) if pieces else np.empty(0, np.uint8)
        out = np.empty(int(mine[0]), np.uint8)
        wait(comm.Iscatterv([send, (counts, displs), world.MPI.BYTE], out, root))
        return out
    wait(comm.Iscatter(None, mine, root))
    out = np.empty(int(mine[0]), np.uint8)
    wait(comm.Iscatterv(None, out, root))
    return out


def _mpi_op(op: Op) -> Any:
    MPI = get().MPI
    table = {"sum": MPI.SUM, "prod": MPI.PROD, "max": MPI.MAX, "min": MPI.MIN}
    return table.get(op) if isinstance(op, str) else None


def _py_op(op: Op, where: str) -> Callable[[Any, Any], Any]:
    if callable(op):
        return op
    if op in _PY_OPS:
        return _PY_OPS[op]
    raise ValueError(f"{where}: op must be one of {sorted(_PY_OPS)} or a function of two arguments, got {op!r}")


def _native_numeric(obj: Any) -> bool:
    return (
        type(obj) is np.ndarray
        and obj.dtype.kind in "biufc"
        and obj.dtype.isnative
        and obj.dtype.fields is None
    )


@_one_at_a_time
def allreduce(obj: Any, op: Op = "sum") -> Any:
    """Combine every node's ``obj`` with ``op`` and return the result on every node; blocking.

    ``op`` is ``"sum"``, ``"prod"``, ``"max"``, ``"min"`` (element-wise for arrays) or a function
    of two arguments applied in node order. An array with a native numeric dtype and a named op
    goes through MPI's ``Iallreduce`` (every node must pass the same shape and dtype); the
    result is a new array. Raises ValueError for an unknown op.
    """
    py = _py_op(op, "allreduce")
    mpi_op = _mpi_op(op)
    world = get()
    world.engine.collective("allreduce", -1)
    if mpi_op is not None and _native_numeric(obj):
        send = np.ascontiguousarray(obj)
        out = buffers.empty(send.shape, send.dtype)
        world.engine.wait(world.private.Iallreduce(send, out, mpi_op), send, out)
        return out
    return functools.reduce(py, _gather(obj, None))


@_one_at_a_time
def reduce(obj: Any, op: Op = "sum", root: int = 0) -> Any:
    """Like :func:`allreduce`, but only ``root`` gets the result; the others get None."""
    world = get()
    world.engine.check_node("reduce: root", root)
    world.engine.collective("reduce", root)
    py = _py_op(op, "reduce")
    mpi_op = _mpi_op(op)
    if mpi_op is not None and _native_numeric(obj):
        send = np.ascontiguousarray(obj)
        out = buffers.empty(send.shape, send.dtype) if world.node_id == root else None
        world.engine.wait(world.private.Ireduce(send, out, mpi_op, root), send, out)
        return out
    items = _gather(obj, root)
    return None if items is None else functools.reduce(py, items)

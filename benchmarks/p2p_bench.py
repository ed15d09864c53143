"""Point-to-point benchmarks on 2 nodes: latency, bandwidth, a dict of arrays.

Run by ``run.py`` as ``mpiexec -n 2 python p2p_bench.py --out FILE [--quick]``. Every case is
a ping-pong between rank 0 and rank 1; a sample is the one-way time per message, timed on
rank 0 over a batch of round trips. distrcomp (``dc``) and the mpi4py baselines run
interleaved in the same process (see :mod:`timing`); the baselines use their own duplicate of
``COMM_WORLD``. Rank 0 writes ``{"samples": {case: {variant: [seconds, ...]}}}`` to FILE.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from mpi4py import MPI
from timing import interleaved, node_args

import distrcomp as dc
from distrcomp import world

MIB = 1 << 20
BANDWIDTH_SIZES = {"1MiB": MIB, "16MiB": 16 * MIB, "128MiB": 128 * MIB}
SMALL_DICT = {"step": 12, "loss": 0.25, "name": "worker-3", "ok": True}


def pingpong(
    comm: Any, send: Callable[[], None], recv: Callable[[], Any], iters: int
) -> Callable[[], float]:
    """A sample function: ``iters`` round trips from rank 0; returns the one-way seconds."""

    def sample() -> float:
        comm.Barrier()
        start = time.perf_counter()
        if comm.Get_rank() == 0:
            for _ in range(iters):
                send()
                recv()
        else:
            for _ in range(iters):
                recv()
                send()
        return (time.perf_counter() - start) / (2 * iters)

    return sample


def latency_cases(comm: Any, peer: int, reps: int, iters: int) -> dict[str, dict[str, list[float]]]:
    """8-byte array against ``Send``/``Recv`` into a preallocated buffer; small dict against
    lowercase ``send``/``recv``; 8-byte array with the engine counting for ``--stats`` against
    the same without."""
    array = np.zeros(1, np.float64)
    into = np.empty_like(array)
    array_case = interleaved({
        "dc": pingpong(comm, lambda: dc.send(peer, array), lambda: dc.recv(peer), iters),
        "mpi4py_Send": pingpong(
            comm, lambda: comm.Send(array, peer, 1), lambda: comm.Recv(into, peer, 1), iters
        ),
    }, reps)
    dict_case = interleaved({
        "dc": pingpong(comm, lambda: dc.send(peer, SMALL_DICT), lambda: dc.recv(peer), iters),
        "mpi4py_send": pingpong(
            comm, lambda: comm.send(SMALL_DICT, peer, 2), lambda: comm.recv(None, peer, 2), iters
        ),
    }, reps)
    # The cost of --stats (distrcomp.diag's profile): the engine counts with it, not without.
    engine = world.get().engine

    def counted(sample: Callable[[], float]) -> Callable[[], float]:
        def run() -> float:
            engine.set_profile()
            try:
                return sample()
            finally:
                engine.stop_profile()

        return run

    stats_case = interleaved({
        "dc": counted(pingpong(comm, lambda: dc.send(peer, array), lambda: dc.recv(peer), iters)),
        "dc_nostats": pingpong(comm, lambda: dc.send(peer, array), lambda: dc.recv(peer), iters),
    }, reps)
    return {"latency_array8": array_case, "latency_dict": dict_case,
            "latency_array8_stats": stats_case}


def bandwidth_case(comm: Any, peer: int, nbytes: int, reps: int, iters: int) -> dict[str, list[float]]:
    """A float64 array of ``nbytes``: dc, ``Send``/``Recv`` preallocated, lowercase ``send``/``recv``."""
    array = np.ones(nbytes // 8, np.float64)
    into = np.empty_like(array)
    return interleaved({
        "dc": pingpong(comm, lambda: dc.send(peer, array), lambda: dc.recv(peer), iters),
        "mpi4py_Send": pingpong(
            comm, lambda: comm.Send(array, peer, 3), lambda: comm.Recv(into, peer, 3), iters
        ),
        "mpi4py_send": pingpong(
            comm, lambda: comm.send(array, peer, 4), lambda: comm.recv(None, peer, 4), iters
        ),
    }, reps)


def dict_of_arrays_case(comm: Any, peer: int, reps: int, iters: int) -> dict[str, list[float]]:
    """A dict of 4 x 16 MiB float64 arrays: dc against lowercase ``send``/``recv``."""
    box = {f"w{i}": np.full(2 * MIB, float(i)) for i in range(4)}
    return interleaved({
        "dc": pingpong(comm, lambda: dc.send(peer, box), lambda: dc.recv(peer), iters),
        "mpi4py_send": pingpong(
            comm, lambda: comm.send(box, peer, 5), lambda: comm.recv(None, peer, 5), iters
        ),
    }, reps)


def main() -> None:
    args = node_args(__doc__, latency_only=True)

    comm = MPI.COMM_WORLD.Dup()
    if comm.Get_size() != 2:
        raise SystemExit("p2p_bench.py needs exactly 2 ranks")
    peer = 1 - comm.Get_rank()
    dc.node_id  # noqa: B018 - initialise distrcomp before any timing
    # Many short repetitions rather than a few long ones: load on a shared machine comes in
    # bursts, and finer interleaving spreads each burst over both variants.
    reps = 2 if args.quick else 61
    samples = latency_cases(comm, peer, reps, 50 if args.quick else 500)
    big_reps = 2 if args.quick else 41
    for name, nbytes in () if args.latency_only else BANDWIDTH_SIZES.items():
        iters = 1 if args.quick else max(1, 32 * MIB // nbytes)
        samples[f"bandwidth_{name}"] = bandwidth_case(comm, peer, nbytes, big_reps, iters)
    if not args.latency_only:
        samples["dict_4x16MiB"] = dict_of_arrays_case(comm, peer, big_reps, 1 if args.quick else 2)
    if comm.Get_rank() == 0:
        with open(args.out, "w") as out:
            json.dump({"samples": samples, "nbytes": BANDWIDTH_SIZES | {"4x16MiB": 64 * MIB}}, out)


if __name__ == "__main__":
    main()

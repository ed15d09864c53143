"""Send-first ring of 64 MiB arrays: every node sends to its right, then receives from its left.

Run by ``run.py`` as ``mpiexec -n 4 python ring_bench.py --out FILE [--quick]``. distrcomp's
``send`` must not deadlock here even though every node sends first (its blocking calls accept
incoming messages); the baseline is mpi4py's ``Sendrecv``, which cannot deadlock by design.
A sample is the seconds per ring step on rank 0. Every received array is checked, so the row
"completes" only if the job ends in time with the right data.
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

NBYTES = 64 << 20


def steps(comm: Any, step: Callable[[], np.ndarray], left: int, iters: int) -> Callable[[], float]:
    """A sample function: ``iters`` ring steps after a barrier, each result checked."""

    def sample() -> float:
        comm.Barrier()
        start = time.perf_counter()
        for _ in range(iters):
            got = step()
            if got[0] != left or got[-1] != left:
                raise SystemExit(f"ring: node {comm.Get_rank()} got wrong data from node {left}")
        return (time.perf_counter() - start) / iters

    return sample


def main() -> None:
    args = node_args(__doc__)

    comm = MPI.COMM_WORLD.Dup()
    rank, size = comm.Get_rank(), comm.Get_size()
    right, left = (rank + 1) % size, (rank - 1) % size
    dc.node_id  # noqa: B018 - initialise distrcomp before any timing
    mine = np.full(NBYTES // 8, float(rank))
    into = np.empty_like(mine)

    def dc_step() -> np.ndarray:
        dc.send(right, mine)
        return dc.recv(left)

    def sendrecv_step() -> np.ndarray:
        comm.Sendrecv(mine, right, 0, into, left, 0)
        return into

    iters = 1 if args.quick else 2
    samples = interleaved({
        "dc": steps(comm, dc_step, left, iters),
        "mpi4py_Sendrecv": steps(comm, sendrecv_step, left, iters),
    }, 2 if args.quick else 15)
    if rank == 0:
        with open(args.out, "w") as file:
            json.dump({"samples": {f"ring_64MiB_n{size}": samples}}, file)


if __name__ == "__main__":
    main()

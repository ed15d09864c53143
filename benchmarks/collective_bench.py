"""``allreduce`` of an 8 MiB float64 array against mpi4py's ``Allreduce``, at any node count.

Run by ``run.py`` as ``mpiexec -n N python collective_bench.py --out FILE [--quick]``. A sample
is the seconds per call, timed on rank 0 over a batch of calls started together (barrier).
Rank 0 writes ``{"samples": {"allreduce_8MiB_nN": {variant: [seconds, ...]}}}`` to FILE.
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

NBYTES = 8 << 20


def batch(comm: Any, call: Callable[[], Any], iters: int) -> Callable[[], float]:
    """A sample function: ``iters`` calls after a barrier; returns seconds per call."""

    def sample() -> float:
        comm.Barrier()
        start = time.perf_counter()
        for _ in range(iters):
            call()
        return (time.perf_counter() - start) / iters

    return sample


def main() -> None:
    args = node_args(__doc__)

    comm = MPI.COMM_WORLD.Dup()
    dc.node_id  # noqa: B018 - initialise distrcomp before any timing
    local = np.full(NBYTES // 8, comm.Get_rank() + 1.0)
    out = np.empty_like(local)
    iters = 1 if args.quick else 5
    samples = interleaved({
        "dc": batch(comm, lambda: dc.allreduce(local), iters),
        "mpi4py_Allreduce": batch(comm, lambda: comm.Allreduce(local, out, MPI.SUM), iters),
    }, 2 if args.quick else 61)
    expected = comm.Get_size() * (comm.Get_size() + 1) / 2
    if not (dc.allreduce(local) == expected).all():
        raise SystemExit("allreduce gave a wrong result")
    if comm.Get_rank() == 0:
        with open(args.out, "w") as file:
            json.dump({"samples": {f"allreduce_8MiB_n{comm.Get_size()}": samples}}, file)


if __name__ == "__main__":
    main()

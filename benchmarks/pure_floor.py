"""The floor of a plain-Python engine: what the MPI calls alone cost, in Python, per message.

``mpiexec -n 2 python benchmarks/pure_floor.py`` (not run by ``run.py``): an 8 B ping-pong
that makes only the calls distrcomp's engine must make for a message (``Isend`` tested once;
``Improbe`` until a message is there, then ``Mrecv`` into a new array), with no other Python,
against mpi4py's ``Send``/``Recv`` of a preallocated array. Prints the medians over three
interleaved rounds of 20,000 round trips and their ratio: no plain-Python engine built on
mpi4py's objects can be faster than that ratio (see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from mpi4py import MPI

ROUND_TRIPS = 20_000


def main() -> None:
    comm = MPI.COMM_WORLD
    me, other = comm.Get_rank(), 1 - comm.Get_rank()
    data, into = np.zeros(1), np.empty(1)
    status = MPI.Status()

    def raw() -> None:
        for _ in range(ROUND_TRIPS):
            if me == 0:
                comm.Send(data, 1)
                comm.Recv(into, 1)
            else:
                comm.Recv(into, 0)
                comm.Send(data, 0)

    def floor() -> None:
        pending = []

        def send() -> None:
            request = comm.Isend(data, other, 4)
            if not request.Test():
                pending.append(request)

        def recv() -> np.ndarray:
            message = None
            while message is None:
                message = comm.Improbe(MPI.ANY_SOURCE, MPI.ANY_TAG, status)
            got = np.empty(status.Get_count(MPI.BYTE) // 8)
            message.Recv(got)
            return got

        for _ in range(ROUND_TRIPS):
            if me == 0:
                send()
                recv()
            else:
                recv()
                send()
        MPI.Request.Waitall(pending)

    seconds: dict[str, list[float]] = {"raw": [], "floor": []}
    for _ in range(3):
        for name, run in (("raw", raw), ("floor", floor)):
            comm.Barrier()
            start = time.perf_counter()
            run()
            seconds[name].append((time.perf_counter() - start) / ROUND_TRIPS / 2)
    if me == 0:
        raw_s, floor_s = statistics.median(seconds["raw"]), statistics.median(seconds["floor"])
        library = MPI.Get_library_version().splitlines()[0]
        print(f"{library}\none-way 8 B: Send/Recv {raw_s * 1e6:.2f} us, engine floor "
              f"{floor_s * 1e6:.2f} us, ratio {floor_s / raw_s:.2f}")


if __name__ == "__main__":
    main()

"""Raw mpi4py across hosts: each rank reports its host, a token goes round the ring, and rank 0
sends a 16 MiB float64 array to every other rank (checked on arrival).

Prints ``hello rank R/N on HOST;`` per rank (the ``;`` ends the name even when the launcher
interleaves ranks' lines), then on rank 0 ``ring ok TOKEN HOST,HOST,...``.
"""

from __future__ import annotations

import socket

import numpy as np
from mpi4py import MPI

NBYTES = 16 * 2**20


def main() -> None:
    """Run the hello, the ring and the 16 MiB transfer on COMM_WORLD."""
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    host = socket.gethostname()
    print(f"hello rank {rank}/{size} on {host};", flush=True)
    token = comm.sendrecv(rank, dest=(rank + 1) % size, source=(rank - 1) % size)
    assert token == (rank - 1) % size
    n = NBYTES // 8
    if rank == 0:
        data = np.arange(n, dtype=np.float64)
        for dest in range(1, size):
            comm.Send(data, dest=dest, tag=7)
    else:
        data = np.empty(n, dtype=np.float64)
        comm.Recv(data, source=0, tag=7)
        assert np.array_equal(data, np.arange(n, dtype=np.float64)), f"rank {rank}: bad payload"
    hosts = comm.gather(host)
    if rank == 0:
        print(f"ring ok {token} {','.join(hosts)}", flush=True)


if __name__ == "__main__":
    main()

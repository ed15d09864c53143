"""The 4-name API across hosts: each node says where it runs, then ``ring`` (argv[1]): a ring of
16 MiB arrays where every node sends first, then the collectives; or ``alltoall``: every node
sends a 16 MiB array to every other. Node 0 prints ``all ok HOSTS`` when every check passed."""

from __future__ import annotations

import socket
import sys

import numpy as np

import distrcomp as dc

N = 16 * 2**20 // 8  # float64 elements in 16 MiB


def block(src: int, dest: int) -> np.ndarray:
    """The array ``src`` sends to ``dest``: distinct per pair, cheap to check."""
    return np.arange(N, dtype=np.float64) + 1000.0 * src + dest


def main() -> None:
    me, n = dc.node_id, dc.n_node
    print(f"node {me}/{n} on {socket.gethostname()}")
    if sys.argv[1:] == ["alltoall"]:
        for dest in range(n):
            if dest != me:
                dc.send(dest, block(me, dest))
        for src in range(n):
            if src != me:
                assert np.array_equal(dc.recv(src), block(src, me)), f"bad block from {src}"
    else:
        right, left = (me + 1) % n, (me - 1) % n
        dc.send(right, block(me, right))  # everyone sends first: must not deadlock
        assert np.array_equal(dc.recv(left), block(left, me)), "ring: bad payload"
    hosts = dc.allgather(socket.gethostname())
    assert dc.bcast("token" if me == 0 else None) == "token"
    assert dc.allreduce(me) == n * (n - 1) // 2
    assert np.array_equal(dc.allreduce(np.full(1000, me)), np.full(1000, n * (n - 1) // 2))
    assert dc.scatter(list(range(10, 10 + n)) if me == 0 else None) == 10 + me
    gathered = dc.gather(me)
    dc.barrier()
    if me == 0:
        assert gathered == list(range(n))
        print(f"all ok {','.join(hosts)}")


if __name__ == "__main__":
    main()

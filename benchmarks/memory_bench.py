"""Peak memory of a node receiving one 128 MiB array, in a fresh process.

Run by ``run.py`` as ``mpiexec -n 2 python memory_bench.py --out FILE --how dc|mpi4py_send``.
Rank 1 reads its peak resident set (``VmHWM`` in ``/proc/self/status``) after everything is
initialised and warmed up with a small message, receives the array from rank 0, reads the peak
again, and writes ``{"how", "nbytes", "peak_before", "peak_after"}`` (bytes) to FILE. The
growth beyond the array itself is what receiving cost in extra copies.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from mpi4py import MPI

import distrcomp as dc

NBYTES = 128 << 20


def peak_rss() -> int:
    """This process's peak resident set size so far, in bytes (Linux ``VmHWM``)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file rank 1 writes")
    parser.add_argument("--how", choices=["dc", "mpi4py_send"], default="dc")
    args = parser.parse_args()

    comm = MPI.COMM_WORLD
    if comm.Get_size() != 2:
        raise SystemExit("memory_bench.py needs exactly 2 ranks")
    if args.how == "dc":
        send, recv = (lambda obj: dc.send(1, obj)), (lambda: dc.recv(0))
    else:
        send, recv = (lambda obj: comm.send(obj, 1, 0)), (lambda: comm.recv(None, 0, 0))
    if comm.Get_rank() == 0:
        send(np.zeros(4))
        send(np.ones(NBYTES // 8))
        return
    recv()
    before = peak_rss()
    got = recv()
    after = peak_rss()
    assert got.nbytes == NBYTES and got[0] == 1.0
    with open(args.out, "w") as file:
        json.dump({"how": args.how, "nbytes": NBYTES, "peak_before": before, "peak_after": after}, file)


if __name__ == "__main__":
    main()

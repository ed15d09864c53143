"""distrcomp's point-to-point pattern in raw mpi4py, to show where an all-to-all hangs.

Each rank keeps one ANY_SOURCE/ANY_TAG receive posted for small "frames"; to send it posts a
frame (tag 0) and a large payload (tag 1) and waits for the payload while taking any frame that
arrives (then receiving that frame's payload with a blocking Recv). Every rank sends to every
other, then takes the frames still due. Prints ``RANK ok`` per rank. Not run by the tests; it
documents the MPICH/UCX hang that made distrcomp take frames with matched probes instead::

    MPIR_CVAR_NOLOCAL=1 mpiexec -n 3 python p2p_pattern.py 65536            # MPICH, UCX: hangs
    MPIR_CVAR_NOLOCAL=1 MPIR_CVAR_CH4_NETMOD=ofi mpiexec -n 3 python p2p_pattern.py 16777216  # ok
    mpiexec --oversubscribe --mca btl tcp,self -n 3 python p2p_pattern.py 16777216           # ok
"""

from __future__ import annotations

import sys

import numpy as np
from mpi4py import MPI

comm = MPI.COMM_WORLD.Dup()
me, size = comm.Get_rank(), comm.Get_size()
count = int(sys.argv[1]) // 8 if len(sys.argv) > 1 else 2**21
frame = bytearray(1 << 16)
status = MPI.Status()
frame_req = comm.Irecv(frame, MPI.ANY_SOURCE, MPI.ANY_TAG)
taken = 0
frames_sent = []


def take() -> None:
    """The frame in ``status`` arrived: receive its payload, post the next frame receive."""
    global frame_req, taken
    payload = np.empty(count)
    comm.Recv(payload, status.Get_source(), status.Get_tag() | 1)
    taken += 1
    frame_req = comm.Irecv(frame, MPI.ANY_SOURCE, MPI.ANY_TAG)


for dest in range(size):
    if dest == me:
        continue
    frames_sent.append(comm.Isend(b"x", dest, 0))
    send = comm.Isend(np.full(count, float(me)), dest, 1)
    while True:
        pair = [send, frame_req]
        index = MPI.Request.Waitany(pair, status)
        frame_req = pair[1]
        if index == 0:
            break
        take()
while taken < size - 1:
    frame_req.Wait(status)
    take()
MPI.Request.Waitall(frames_sent)
print(me, "ok", flush=True)

"""Says ``ready HOST`` once every node is up, then keeps the nodes talking (a broadcast every
0.2 s) for ``argv[1]`` seconds (default: forever) and exits 0."""

from __future__ import annotations

import socket
import sys
import time

import distrcomp as dc

limit = float(sys.argv[1]) if len(sys.argv) > 1 else float("inf")
dc.barrier()
print(f"ready {socket.gethostname()}", flush=True)
start = time.monotonic()
while not dc.bcast(time.monotonic() - start >= limit if dc.node_id == 0 else None):
    time.sleep(0.2)  # node 0 decides when to stop, so that every node stops in the same round
print(f"done {socket.gethostname()}")

"""Write into ARGV[1]/secret-<node> the relay secret this node's wrapper was given in its
environment, if it was (a launcher that forwards it through the MPI), without printing it: the
test then looks for it on the wire. ``relayed-marker-<node>`` on stdout (relayed: proves the
capture sees the relay's traffic)."""

from __future__ import annotations

import os
import sys

with open(f"/proc/{os.getppid()}/environ", "rb") as handle:
    fields = dict(entry.split(b"=", 1) for entry in handle.read().split(b"\0") if b"=" in entry)
rank = os.environ.get("PMI_RANK") or os.environ.get("OMPI_COMM_WORLD_RANK")
if b"DISTRCOMP_RELAY_SECRET" in fields:
    with open(os.path.join(sys.argv[1], f"secret-{rank}"), "wb") as handle:
        handle.write(fields[b"DISTRCOMP_RELAY_SECRET"])
print(f"relayed-marker-{rank}")

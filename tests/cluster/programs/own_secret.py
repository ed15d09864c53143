"""Write into ARGV[1]/secret-<node> the relay secret this node's wrapper was given (from the
wrapper's environment as it started, or the key file it names), without printing it: the test
then looks for it on the wire. ``node N`` on stdout (relayed: proves the capture sees the
relay's traffic)."""

from __future__ import annotations

import os
import sys

with open(f"/proc/{os.getppid()}/environ", "rb") as handle:
    fields = dict(entry.split(b"=", 1) for entry in handle.read().split(b"\0") if b"=" in entry)
secret = fields.get(b"DISTRCOMP_RELAY_SECRET")
if secret is None:
    with open(fields[b"DISTRCOMP_RELAY_SECRET_FILE"], "rb") as handle:
        secret = handle.readline().strip()
rank = os.environ.get("PMI_RANK") or os.environ.get("OMPI_COMM_WORLD_RANK")
with open(os.path.join(sys.argv[1], f"secret-{rank}"), "wb") as handle:
    handle.write(secret)
print(f"relayed-marker-{rank}")

"""Once every node runs: node 0 reads the environment of every process of this job on the
machine (all of them: the test cluster's nodes share one PID namespace), found by the job id
in it, and prints ``seen NAMES`` (their process names, sorted) and ``secret NAMES`` (those whose
environment holds a relay secret variable, without printing its value)."""

from __future__ import annotations

import os

import distrcomp

JOB = b"DISTRCOMP_JOB=" + os.environ["DISTRCOMP_JOB"].encode()
SECRET = b"DISTRCOMP_RELAY_SECRET"

distrcomp.barrier()
if distrcomp.node_id == 0:
    seen, secret = set(), set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                entries = handle.read().split(b"\0")
            with open(f"/proc/{pid}/comm") as handle:
                name = handle.read().strip()
        except OSError:
            continue
        if JOB in entries:
            seen.add(name)
            if any(entry.startswith(SECRET) for entry in entries):
                secret.add(name)
    print("seen", " ".join(sorted(seen)))
    print("secret", " ".join(sorted(secret)))
distrcomp.barrier()

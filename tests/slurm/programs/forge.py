"""On a Slurm node, connect to a relay (ARGV[1], ``host:port``; see ``relay_once.py``) four
times as node 0 with MUNGE credentials from this node's munged (socket: the one Slurm uses):
right, for another payload, the first one again (replayed), and right but made by another
user. Prints ``NAME accepted`` or ``NAME refused`` for each."""

from __future__ import annotations

import subprocess
import sys
import time

from distrcomp.launcher import channel, munge

address = sys.argv[1]
socket_path = munge.slurm_socket()
made: list[bytes] = []


def right(payload: bytes) -> bytes:
    made.append(munge.encode(payload, socket_path))
    return made[-1]


def nobody(payload: bytes) -> bytes:
    argv = ["munge", *(["--socket", socket_path] if socket_path else [])]
    return subprocess.run(argv, input=payload, capture_output=True, check=True,
                          user=65534).stdout.strip()


attempts = [("right", right),
            ("forged", lambda payload: munge.encode(b"another payload", socket_path)),
            ("replayed", lambda payload: made[0]),
            ("nobody", nobody)]
deadline = time.monotonic() + 30
for name, credential in attempts:
    while True:
        try:
            channel.connect(address, credential, node=0, timeout=10).close()
            print(name, "accepted", flush=True)
        except channel.ChannelError as exc:
            if "cannot connect" in str(exc) and time.monotonic() < deadline:
                time.sleep(0.2)  # the relay is not listening yet
                continue
            print(name, "refused", flush=True)
        break

"""A job that gets stuck in the way argv[2] names; every node first writes ``ready-<id>``
(its pid) into the directory argv[1].

* ``ring``: every node waits in recv from its right-hand neighbour (2 nodes: a recv-recv cycle);
* ``finished``: node 1 ends without a word (os._exit, no exit handshake), node 0 waits for it;
* ``tag``: node 0 sends with tag 7, node 1 waits for tag 8, node 0 waits for node 1's answer;
* ``order``: the last node calls bcast where the others call barrier;
* ``compute``: node 0 sends 64 MiB to node 1, which computes (sleeps) instead of receiving;
* ``from_finished``: node 1 ends normally, node 0 then waits for a second message from it;
* ``any_finished``: every node but 0 ends, node 0 waits for a message from any node;
* ``collective_finished``: node 1 ends after one barrier, the others call bcast and barrier.
"""

import os
import sys
import time
from pathlib import Path

import numpy as np

import distrcomp as dc

scenario = sys.argv[2]
me, n = dc.node_id, dc.n_node
ready = Path(sys.argv[1]) / f"ready-{me}"
ready.with_suffix(".tmp").write_text(str(os.getpid()))
ready.with_suffix(".tmp").rename(ready)

if scenario == "ring":
    dc.recv((me + 1) % n)
elif scenario == "finished":
    if me == 1:
        sys.stdout.flush()
        os._exit(0)
    dc.recv(1)
elif scenario == "tag":
    if me == 0:
        dc.send(1, "hello", tag=7)
        dc.recv(1)
    else:
        dc.recv(0, tag=8)
elif scenario == "order":
    if me == n - 1:
        dc.bcast("x", root=0)
    else:
        dc.barrier()
elif scenario == "compute":
    if me == 0:
        dc.send(1, np.ones(64 << 20, np.uint8))
    else:
        time.sleep(600)  # stands for a long computation
elif scenario == "from_finished":
    if me == 1:
        dc.send(0, "only one")
    elif me == 0:
        print("got", dc.recv(1))
        time.sleep(0.5)
        dc.recv(1)
elif scenario == "any_finished" and me == 0:
    time.sleep(0.5)
    dc.recv(dc.ANY_SOURCE)
elif scenario == "collective_finished":
    dc.barrier()
    if me != 1:
        dc.bcast("x", root=0)
        dc.barrier()
        os.write(1, f"node {me} passed the barrier\n".encode())

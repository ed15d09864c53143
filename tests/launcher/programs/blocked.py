"""Every node writes ``ready-<id>`` (its pid) into the directory argv[1], then blocks in
``distrcomp.recv`` from its right-hand neighbour, which never sends."""

import os
import sys
from pathlib import Path

import distrcomp as dc

right = (dc.node_id + 1) % dc.n_node
print(f"node {dc.node_id} waits for node {right}")
ready = Path(sys.argv[1]) / f"ready-{dc.node_id}"
ready.with_suffix(".tmp").write_text(str(os.getpid()))
ready.with_suffix(".tmp").rename(ready)
dc.recv(right)

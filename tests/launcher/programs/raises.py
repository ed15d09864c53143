"""Node ``n_node - 1`` raises ValueError (distrcomp then calls MPI_Abort); the others wait."""

import time

import distrcomp as dc

if dc.node_id == dc.n_node - 1:
    time.sleep(0.2)
    raise ValueError(f"node {dc.node_id} gives up")
dc.recv(dc.n_node - 1)

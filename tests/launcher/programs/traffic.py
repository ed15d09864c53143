"""Known traffic for --stats and --trace: node 0 sends node 1 three arrays of 1000 float64
(the first with its head, the others as its data alone), node 1 answers with one small int,
then both meet in one barrier."""

import numpy as np

import distrcomp as dc

if dc.node_id == 0:
    for i in range(3):
        dc.send(1, np.full(1000, float(i)))
    assert dc.recv(1) == 3
elif dc.node_id == 1:
    got = [dc.recv(0) for _ in range(3)]
    dc.send(0, len(got))
dc.barrier()

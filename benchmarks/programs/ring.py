"""A whole small job: every node sends a greeting to its right, receives from its left, prints it.

The program the launcher benchmark runs, once under ``distrcomp run`` and once under bare
``mpiexec``.
"""

import distrcomp as dc

right = (dc.node_id + 1) % dc.n_node
left = (dc.node_id - 1) % dc.n_node
dc.send(right, f"hello from node {dc.node_id}")
print(f"node {dc.node_id} of {dc.n_node} got: {dc.recv(left)!r}")

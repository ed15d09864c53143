"""Every node sends a greeting to its right-hand neighbour, then receives from its left.

    distrcomp run -n 4 examples/ring.py
"""

import distrcomp as dc

right = (dc.node_id + 1) % dc.n_node
left = (dc.node_id - 1) % dc.n_node
dc.send(right, f"hello from node {dc.node_id}")
print(f"node {dc.node_id} of {dc.n_node} got: {dc.recv(left)!r}")

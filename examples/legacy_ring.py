"""A script written for the old DistrComp library, unchanged: a ring with ``import message``.

    distrcomp run -n 4 examples/legacy_ring.py
    PYTHONPATH=$(distrcomp compat-path) mpiexec -n 4 python examples/legacy_ring.py

Needs at least 2 nodes: on 1 node the right-hand neighbour is the node itself, and the old
library refused to send a message to oneself (so does distrcomp's compat module).
"""
# ruff: noqa: UP031 - the old library's style, kept verbatim
import message as ms

ms.setup_connection()
myID, nodes = ms.node_id, ms.n_node
ms.send((myID + 1) % nodes, "Next to %i is %i" % (myID, (myID + 1) % nodes))
print(ms.recv((myID - 1 + nodes) % nodes))
ms.close_connection()

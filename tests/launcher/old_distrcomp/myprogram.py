"""
Node i sends a string to the node (i+1) % number_of_nodes
and receive its string from node (i-1) % number_of_nodes (ie. a circle).
"""
import message as ms

ms.setup_connection()

myID = ms.node_id
nodes = ms.n_node
nxt = (myID+1)%nodes
pre = (myID-1+nodes)%nodes # avoid negative value

print "My ID is", myID
ms.send(nxt, "Next to %i is %i" % (myID, nxt))
msg = ms.recv(pre)

print msg
ms.close_connection()

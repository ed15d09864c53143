# Every node sends its share to node 0, which takes them in the order they come (recv(-1)).
import message as ms
import cPickle

ms.setup_connection()

if ms.node_id == 0 :
    total = 0
    for k in xrange(ms.n_node - 1) :
        src = ms.recv(-1)
        share = cPickle.loads(ms.recv(src))
        total += share["value"]
    print "Sum of", ms.n_node - 1, "shares :", total
    print "Mean share :", total / (ms.n_node - 1)
else :
    ms.send(0, cPickle.dumps({"node" : ms.node_id, "value" : ms.node_id * 10}))

ms.close_connection()

# DistrComp message module: node to node messages over TCP sockets.
# The master's worker writes the port to use into common_port_file before the program starts.
import socket
import threading
import cPickle
import struct
import select
import os

common_port_file = ".distrcomp_port"
peers_file = "peers.txt"

def read_ip_from(file) :
    f = open(file, "r")
    res = [line.strip() for line in f.read().splitlines() if line.strip()]
    f.close()
    return res

def local_ip() :
    return socket.gethostbyname(socket.gethostname())

# IP list ("index to IP") and IP to index
i2ip = read_ip_from(peers_file)
ip2i = dict()
for i in range(len(i2ip)) :
    ip2i[i2ip[i]] = i

node_id = ip2i[local_ip()]
n_node = len(i2ip)
port = int(open(common_port_file).read())
sock = [None for i in range(n_node)]
lock = [threading.Lock() for i in range(n_node)]
cached = None

def setup_connection() :
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("", port))
    server.listen(100)
    for i in range(node_id) :
        s = socket.socket()
        s.connect((i2ip[i], port))
        s.send(struct.pack("i", node_id))
        sock[i] = s
    for i in range(node_id + 1, n_node) :
        s, address = server.accept()
        sock[struct.unpack("i", s.recv(4))[0]] = s
    server.close()
    print "Setup connection : OK"

def close_connection() :
    for s in sock :
        if s is not None :
            s.close()

def _send(idx, data) :
    x = cPickle.dumps(data)
    with lock[idx] :
        sock[idx].sendall("x" + struct.pack("i", len(x)) + x)

def send(idx, data) :
    if idx == node_id :
        raise "Cannot send message to myself."
    threading.Thread(target=_send, args=(idx, data)).start()

def recv(idx) :
    global cached
    if idx < 0 :
        if cached is not None :
            return cached
        ready, w, e = select.select([s for s in sock if s is not None], [], [])
        cached = sock.index(ready[0])
        ready[0].recv(1)
        return cached
    if idx != cached :
        sock[idx].recv(1)
    cached = None
    y = struct.unpack("i", sock[idx].recv(4))[0]
    s = ""
    while len(s) < y :
        s += sock[idx].recv(y - len(s))
    return cPickle.loads(s)

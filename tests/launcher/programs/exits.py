"""Node 1 prints a line and one on stderr, then exits with status argv[1] at once (os._exit,
so that distrcomp's exit handler does not wait for the others); the others wait for it."""

import os
import sys
import time

import distrcomp as dc

if dc.node_id == 1:
    print("node 1 is leaving")
    print("node 1: something went wrong", file=sys.stderr)
    time.sleep(0.2)
    os._exit(int(sys.argv[1]))
dc.recv(1)

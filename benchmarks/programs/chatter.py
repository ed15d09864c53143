"""Every node prints LINES numbered lines (argv[1], default 200000) as fast as it can.

The program of the output-relay benchmark. Each line names its node and number and carries a
fixed pad, so the reader can tell an intact line from a damaged one (cut, merged, mistagged).
"""

import sys

import distrcomp as dc

PAD = "abcdefghijklmnopqrstuvwxyz0123456789"

lines = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
me = dc.node_id
write = sys.stdout.write
for i in range(lines):
    write(f"node {me} line {i} {PAD}\n")
sys.stdout.flush()

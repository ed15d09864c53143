"""Writes many lines in small unbuffered pieces: ``writer.py LINES``.

Line ``i`` of node ``k`` on stdout is ``n<k> <i> <x * (i % 37)>``, written by ``print`` with
several arguments (one write per piece under ``distrcomp run -u``) or, every 7th line, by
``os.write`` in three partial writes. Every 1000th line also goes to stderr as ``e<k> <i>``.
The last stdout line, ``end <k>``, has no newline.
"""

import os
import sys

import distrcomp as dc

node = dc.node_id
lines = int(sys.argv[1])
for i in range(lines):
    if i % 7 == 0:
        text = f"n{node} {i} {'x' * (i % 37)}\n".encode()
        os.write(1, text[:2])
        os.write(1, text[2:5])
        os.write(1, text[5:])
    else:
        print(f"n{node}", i, "x" * (i % 37))
    if i % 1000 == 0:
        print(f"e{node}", i, file=sys.stderr)
sys.stdout.write(f"end {node}")

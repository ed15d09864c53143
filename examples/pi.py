"""Parallel π: every node integrates a share of 4 / (1 + x²) over [0, 1]; allreduce adds them.

    distrcomp run -n 4 examples/pi.py

The midpoint rule with N intervals: node k takes the intervals k, k + n_node, k + 2 n_node, ...
``dc.allreduce`` sums the partial sums on every node. Node 0 prints the estimate, and exits 1 if
it is off from math.pi by more than the rule's error bound, or differs from the same sum done
serially by more than rounding can explain.
"""

import math
import sys

import numpy as np

import distrcomp as dc

N = 20_000_000
CHUNK = 1_000_000  # intervals per numpy pass: bounded memory whatever N is


def partial_sum(first: int, stride: int) -> float:
    total = 0.0
    for start in range(first, N, stride * CHUNK):
        i = np.arange(start, min(N, start + stride * CHUNK), stride, dtype=np.float64)
        x = (i + 0.5) / N
        total += float(np.sum(4.0 / (1.0 + x * x)))
    return total


mine = partial_sum(dc.node_id, dc.n_node) / N
estimate = dc.allreduce(mine)

if dc.node_id == 0:
    error = abs(estimate - math.pi)
    bound = 1.0 / (3 * N * N)  # midpoint rule: |error| <= max|f''| / (24 N²), and |f''| <= 8
    serial = partial_sum(0, 1) / N
    print(f"pi ~ {estimate:.15f} on {dc.n_node} nodes, error {error:.1e}")
    if error > bound + 1e-12 or abs(estimate - serial) > 1e-12:
        print(f"MISMATCH: error bound {bound:.1e}, serial sum {serial!r}, distributed {estimate!r}")
        sys.exit(1)

"""Heat diffusion on a ring of cells split across the nodes, with a halo exchange every step.

    distrcomp run -n 4 examples/halo.py

Node 0 makes the initial temperatures and scatters one block of cells to each node. Every step,
each node sends its first cell to its left neighbour and its last cell to its right neighbour
(sends first, then receives: distrcomp's sends never deadlock), puts the cells it receives in
its ghost cells, and updates its block. Finally node 0 gathers the blocks and compares them with
the same computation done serially on one array. The two must be bit-for-bit equal (each cell
goes through the same floating-point operations), so any lost, swapped or stale halo shows up;
on a mismatch node 0 says where and exits 1.
"""

import sys

import numpy as np

import distrcomp as dc

N_CELLS = 100_000
STEPS = 300
ALPHA = 0.25  # diffusion number; below 0.5 the explicit scheme is stable

# With 2 nodes the left and the right neighbour are the same node: tags tell the halos apart.
FROM_RIGHT, FROM_LEFT = 1, 2


def update(extended: np.ndarray) -> np.ndarray:
    """One explicit step for the cells of ``extended`` between its two ghost cells."""
    inner = extended[1:-1]
    return inner + ALPHA * (extended[:-2] - 2.0 * inner + extended[2:])


def serial(cells: np.ndarray, steps: int) -> np.ndarray:
    for _ in range(steps):
        cells = update(np.concatenate((cells[-1:], cells, cells[:1])))
    return cells


me, n = dc.node_id, dc.n_node
left, right = (me - 1) % n, (me + 1) % n

initial = None
if me == 0:
    rng = np.random.default_rng(2024)
    initial = rng.random(N_CELLS)
block = dc.scatter(np.array_split(initial, n) if me == 0 else None, root=0)

for _ in range(STEPS):
    dc.send(left, block[:1], tag=FROM_RIGHT)
    dc.send(right, block[-1:], tag=FROM_LEFT)
    ghost_left = dc.recv(left, tag=FROM_LEFT)
    ghost_right = dc.recv(right, tag=FROM_RIGHT)
    block = update(np.concatenate((ghost_left, block, ghost_right)))

blocks = dc.gather(block, root=0)
if me == 0:
    distributed = np.concatenate(blocks)
    expected = serial(initial, STEPS)
    if not np.array_equal(distributed, expected):
        bad = np.flatnonzero(distributed != expected)
        print(
            f"MISMATCH on {n} nodes: {bad.size} of {N_CELLS} cells differ from the serial result, "
            f"first at cell {bad[0]} ({distributed[bad[0]]!r} != {expected[bad[0]]!r})"
        )
        sys.exit(1)
    print(
        f"{n} nodes, {N_CELLS} cells, {STEPS} steps: identical to the serial result "
        f"(total heat {distributed.sum():.6f})"
    )

"""Master/worker task farm: node 0 hands out tasks, a worker gets a new one as soon as it is done.

    distrcomp run -n 4 examples/task_farm.py

The job: count the primes below LIMIT, cut into TASKS ranges of unequal cost. Node 0 sends one
range to every worker, then repeatedly waits for a result from whichever worker finishes first
(``dc.recv_any``) and sends that worker the next range; when none is left, each worker gets
None, meaning stop. Node 0 checks the total against a serial count and exits 1 on a mismatch.
On one node there are no workers, and node 0 does every task itself.
"""

import sys
from collections import Counter

import numpy as np

import distrcomp as dc

LIMIT = 3_000_000
TASKS = 48


def primes_in(lo: int, hi: int) -> int:
    """How many primes p satisfy lo <= p < hi (a sieve up to hi)."""
    sieve = np.ones(hi, dtype=bool)
    sieve[:2] = False
    for p in range(2, int(hi**0.5) + 1):
        if sieve[p]:
            sieve[p * p :: p] = False
    return int(np.count_nonzero(sieve[lo:hi]))


bounds = np.linspace(0, LIMIT, TASKS + 1).astype(int)
tasks = list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))

if dc.node_id == 0:
    results = {}
    done_by = Counter()
    workers = list(range(1, dc.n_node))
    if not workers:
        for task in tasks:
            results[task] = primes_in(*task)
            done_by[0] += 1
    todo = iter(tasks)
    busy = 0
    for worker in workers:
        task = next(todo, None)
        dc.send(worker, task)
        busy += task is not None
    while busy:
        worker, (task, count) = dc.recv_any()
        results[task] = count
        done_by[worker] += 1
        following = next(todo, None)
        dc.send(worker, following)
        busy -= following is None
    total = sum(results.values())
    expected = primes_in(0, LIMIT)
    share = ", ".join(f"node {w}: {done_by[w]}" for w in sorted(done_by))
    if len(results) != TASKS or total != expected:
        print(f"MISMATCH: {len(results)} of {TASKS} tasks, {total} primes, serial count {expected}")
        sys.exit(1)
    print(f"{total} primes below {LIMIT}, as counted serially; tasks done by {share}")
else:
    while (task := dc.recv(0)) is not None:
        dc.send(0, (task, primes_in(*task)))

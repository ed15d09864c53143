"""Interleaved repetitions and medians: how every benchmark turns timings into samples.

The machine these run on is shared and noisy, so no benchmark compares two numbers taken
minutes apart. Each candidate and its baselines run in the same process, one repetition of
each in turn (the order alternating between repetitions, so that neither always runs first),
after a warm-up of each; a row then compares the medians of those samples.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable, Mapping

__all__ = ["interleaved", "median", "node_args"]


def interleaved(
    variants: Mapping[str, Callable[[], float]], reps: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Call every variant ``warmup`` times, then ``reps`` times each, interleaved.

    Each variant returns one sample (seconds, usually). Repetition ``r`` runs the variants in
    their given order when ``r`` is even and in reverse order when odd. Under MPI every rank
    must call this with the same variants and counts, since the variants communicate.
    Returns ``{name: [sample, ...]}`` without the warm-up samples.
    """
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        for name in names if rep % 2 == 0 else reversed(names):
            samples[name].append(variants[name]())
    return samples


def median(samples: list[float]) -> float:
    """The median of ``samples`` (NaN when there are none, so a row shows as missing)."""
    return statistics.median(samples) if samples else float("nan")


def node_args(doc: str, latency_only: bool = False) -> argparse.Namespace:
    """The command line every benchmark program run under mpiexec takes: --out, --quick (and
    --latency-only, where the program offers it)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file rank 0 writes")
    parser.add_argument("--quick", action="store_true", help="few repetitions (smoke run)")
    if latency_only:
        parser.add_argument("--latency-only", action="store_true", help="only the latency cases")
    return parser.parse_args()

"""The pure parts of benchmarks/: interleaving, damaged-line counting, the table."""

from __future__ import annotations

import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import launcher_bench
import report
import timing

PAD = launcher_bench.PAD


def test_interleaved_alternates_order_and_drops_warmup():
    calls = []
    variants = {name: (lambda name=name: calls.append(name) or float(len(calls))) for name in "ab"}
    samples = timing.interleaved(variants, reps=3, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert samples == {"a": [3.0, 6.0, 7.0], "b": [4.0, 5.0, 8.0]}


def test_count_damaged_accepts_intact_tagged_lines_in_any_order():
    text = "".join(f"[node {i} · host] node {i} line {j} {PAD}\n" for j in (1, 0) for i in (1, 0))
    assert launcher_bench.count_damaged(text, 2, 2, tagged=True) == 0


def test_count_damaged_counts_cut_mistagged_repeated_and_missing_lines():
    text = (
        f"[node 0 · h] node 0 line 0 {PAD}\n"
        f"[node 0 · h] node 0 line 0 {PAD}\n"  # repeated
        f"[node 1 · h] node 0 line 1 {PAD}\n"  # mistagged
        f"[node 1 · h] node 1 line 0 abc\n"  # cut
        "distrcomp: 4 nodes finished, 800000 lines relayed\n"  # the launcher's own: ignored
        f"{PAD[20:]}\n"  # the untagged tail of a cut line
    )
    # damaged: repeated, mistagged, cut, stray tail; missing: (0, 1), (1, 0), (1, 1)
    assert launcher_bench.count_damaged(text, 2, 2, tagged=True) == 7


def test_row_ratios_point_the_way_their_targets_do():
    samples = {"latency_array8": {"dc": [2.0, 3.0, 4.0], "mpi4py_Send": [2.0]}}
    latency = report.row_result(report.ROWS[0], samples)
    assert latency["value"] == 1.5 and latency["direction"] == "<=" and latency["met"] is True
    bandwidth = next(r for r in report.ROWS if r.key == "bandwidth_1MiB_vs_Send")
    res = report.row_result(bandwidth, {"bandwidth_1MiB": {"dc": [2.0], "mpi4py_Send": [1.0]}})
    assert res["value"] == 0.5 and res["met"] is False
    missing = report.row_result(bandwidth, {})
    assert missing["value"] is None and missing["met"] is None
    table = report.format_table([latency, res, missing]).splitlines()
    assert len(table) == 5 and "pass" in table[2] and "MISS" in table[3] and "n/a" in table[4]

"""The parts of benchmarks/ that need no MPI: interleaving, job timing, damaged lines, table."""

from __future__ import annotations

import resource
import subprocess
import sys
import time

import pytest
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
    samples = {"latency_array8": {"dc": [1.0, 1.5, 2.0], "mpi4py_Send": [2.0]}}
    latency = report.row_result(report.ROWS[0], samples)
    assert latency["value"] == 0.75 and latency["direction"] == "<=" and latency["met"] is True
    bandwidth = next(r for r in report.ROWS if r.key == "bandwidth_1MiB_vs_Send")
    res = report.row_result(bandwidth, {"bandwidth_1MiB": {"dc": [2.0], "mpi4py_Send": [1.0]}})
    assert res["value"] == 0.5 and res["met"] is False
    missing = report.row_result(bandwidth, {})
    assert missing["value"] is None and missing["met"] is None
    table = report.format_table([latency, res, missing]).splitlines()
    assert len(table) == 5 and "pass" in table[2] and "MISS" in table[3] and "n/a" in table[4]


def _voluntary_switches() -> int:
    return resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw


def test_run_sleeps_until_the_job_exits_instead_of_polling(tmp_path):
    # Popen.wait(timeout) polls (every 50 ms after the first 0.1 s): each poll is a voluntary
    # context switch of this thread, and each rounded a whole-job sample up to the next poll.
    before = _voluntary_switches()
    code, seconds = launcher_bench._run(
        [sys.executable, "-c", "import time; time.sleep(0.6)"], tmp_path / "out", timeout=60
    )
    switches = _voluntary_switches() - before
    assert code == 0 and seconds > 0
    assert switches <= 4, f"{switches} wake-ups while one job ran"


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_run_kills_the_whole_job_at_its_timeout(tmp_path):
    started = tmp_path / "grandchild"
    script = (
        "import subprocess, sys, time; "
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(started)!r}, 'w').write(str(p.pid)); time.sleep(60)"
    )
    with pytest.raises(subprocess.TimeoutExpired):
        launcher_bench._run([sys.executable, "-c", script], tmp_path / "out", timeout=2)
    grandchild = int(started.read_text())
    for _ in range(100):  # the kill is sent; the grandchild's new parent reaps it
        if not _running(grandchild):
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"process {grandchild} of the timed-out job still runs")

"""What distrcomp/launcher/slurm.py reads without Slurm: the allocation's variables, the
``--slurm`` command line. (The cluster itself: tests/slurm.)"""

from __future__ import annotations

import sys

import pytest

from distrcomp.launcher.peers import Host
from distrcomp.launcher.slurm import (
    Allocation,
    SlurmError,
    allocation,
    outside_argv,
    parse_tasks_per_node,
    without_slurm_option,
)


@pytest.mark.parametrize("text, counts", [
    ("1", [1]), ("2(x3)", [2, 2, 2]), ("2(x2),1", [2, 2, 1]), ("4,1(x2),3", [4, 1, 1, 3]),
])
def test_tasks_per_node_are_expanded_in_node_order(text, counts):
    assert parse_tasks_per_node(text) == counts


@pytest.mark.parametrize("text", ["", "x", "2(x3", "0", "2(x0)", "-1", "2(y3)"])
def test_unreadable_tasks_per_node_is_an_error_naming_the_variable(text):
    with pytest.raises(ValueError, match="SLURM_TASKS_PER_NODE"):
        parse_tasks_per_node(text)


def test_the_first_n_tasks_are_taken_in_slurm_order():
    alloc = Allocation("12", "a[1-3]", ["a1", "a2", "a3"], [2, 2, 1])
    assert alloc.hosts() == [Host("a1", 2, 0), Host("a2", 2, 0), Host("a3", 1, 0)]
    assert alloc.hosts(3) == [Host("a1", 2, 0), Host("a2", 1, 0)]
    with pytest.raises(SlurmError, match=r"-n 6: the Slurm allocation 12 \(a\[1-3\], 5 tasks\) "
                                         "has only 5"):
        alloc.hosts(6)


def test_no_job_id_is_no_allocation_and_a_partial_one_is_an_error():
    assert allocation({}) is None
    with pytest.raises(SlurmError, match="SLURM_JOB_ID=7 is set but"):
        allocation({"SLURM_JOB_ID": "7"})


def test_the_run_inside_salloc_is_the_same_command_line_without_slurm():
    words = ["--slurm", "-N 3 -p debug", "-n", "2", "prog.py", "--slurm", "x"]
    assert without_slurm_option(words) == ["-n", "2", "prog.py", "--slurm", "x"]
    assert without_slurm_option(["--slurm=-N3", "p.py"]) == ["p.py"]
    argv = outside_argv("-N 3 -t 5 --job-name 'a b'", ["p.py"])
    assert argv[:8] == ["salloc", "-N", "3", "-t", "5", "--job-name", "a b", "--"]
    assert argv[8:] == [sys.executable, "-m", "distrcomp", "run", "p.py"]

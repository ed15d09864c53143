"""Root cause, summary table, exit codes; and the mpiexec command line per MPI (pure)."""

from __future__ import annotations

import ast
import signal
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distrcomp.launcher.command import _literal, mpiexec_argv, node_argv, user_command
from distrcomp.launcher.flavor import Flavor
from distrcomp.launcher.report import (
    NodeResult,
    abort_code,
    describe,
    exit_status,
    root_cause,
    summary,
)


def _result(node, code=None, at=None, stopped=False, lost=False, aborted=None):
    return NodeResult(node, f"h{node}", code, started=True, lost=lost, stopped=stopped,
                      failed_at=at, aborted=aborted)


def test_exit_status():
    assert exit_status(0) == 0 and exit_status(3) == 3
    assert exit_status(-signal.SIGKILL) == 137 and exit_status(-signal.SIGTERM) == 143


def test_root_cause_first_unstopped_failure():
    results = [_result(0, 0), _result(1, -9, at=1.0), _result(2, -15, at=1.2, stopped=True)]
    assert root_cause(results).node == 1
    assert root_cause([_result(0, 0), _result(1, 0)]) is None


def test_root_cause_prefers_exit_code_over_simultaneous_kills():
    # MPI killed nodes 0 and 2 in the same instant node 1 exited with 3
    results = [_result(0, -9, at=1.00), _result(1, 3, at=1.05, stopped=True),
               _result(2, -9, at=1.01, stopped=True)]
    assert root_cause(results).node == 1


def test_root_cause_prefers_the_node_that_aborted():
    results = [_result(0, -9, at=1.0), _result(1, -9, at=1.1, stopped=True, aborted=4)]
    assert root_cause(results).node == 1
    late = [_result(0, -9, at=1.0), _result(1, 3, at=5.0, stopped=True)]
    assert root_cause(late).node == 0  # outside the settle window: a consequence


def test_abort_code_from_stderr():
    assert abort_code("Abort(1) on node 2: application called MPI_Abort(MPI_COMM_WORLD, 7) - "
                      "process 2") == 7
    assert abort_code("MPI_ABORT was invoked on rank 1 in communicator MPI_COMM_WORLD\n"
                      "with errorcode 5.") == 5
    assert abort_code("distrcomp: node 1 of 2 raised ValueError; aborting every node with code 1 "
                      "(DISTRCOMP_ABORT_ON_ERROR=0 turns this off)") == 1
    assert abort_code("distrcomp: node 1 of 2 exited with status 3; aborting every node with "
                      "code 3 (...)\nAbort(3) on node 1: called MPI_Abort(MPI_COMM_WORLD, 3)") == 3
    assert abort_code("Traceback ...") is None


def test_describe_and_summary_table():
    never = NodeResult(3, "h3")
    failed = _result(1, 3, at=1.0)
    failed.stderr_tail = ["ValueError: x"]
    stopped = _result(2, -15, at=1.1, stopped=True)
    assert describe(never).startswith("never started")
    assert describe(stopped) == "killed by SIGTERM (stopped by distrcomp)"
    lines = summary([_result(0, 0), failed, stopped, never], 1.2345, root_cause([failed]))
    assert lines[0] == "distrcomp: node 1 (h1) failed: exit code 3"
    assert lines[1].split() == ["node", "host", "result"]
    assert lines[2].split() == ["1", "h1", "exit", "code", "3"]
    assert lines[3].strip() == "| ValueError: x"
    assert lines[-1] == "Total time : 1.234 s"
    assert summary([_result(0, 0)], 2.0) == ["Total time : 2.000 s"]


MPICH = Flavor("mpich", "/x/mpiexec")
OPENMPI = Flavor("openmpi", "/y/mpirun")


def test_user_command_runs_py_files_with_this_python():
    assert user_command(["prog.py", "a"], python="/py") == ["/py", "prog.py", "a"]
    assert user_command(["sh", "-c", "x.py"]) == ["sh", "-c", "x.py"]
    with pytest.raises(ValueError):
        user_command([])


@pytest.mark.parametrize(("flavor", "expected"), [
    (MPICH, ["/x/mpiexec", "-f", "/t/h", "-n", "4", "-envlist", "A,B", "-v", "P"]),
    (OPENMPI, ["/y/mpirun", "--oversubscribe", "--hostfile", "/t/h", "--map-by", "slot", "-n", "4",
               "-x", "A", "-x", "B", "-v", "P"]),
])
def test_mpiexec_argv_per_flavor(flavor, expected):
    argv = mpiexec_argv(flavor, 4, ["P"], hostfile="/t/h", env_names=["A", "B"], mpi_args=["-v"])
    assert argv == expected


def test_node_argv_wraps_the_command():
    argv = node_argv(["a", "b"], python="/py")
    assert argv[:3] == ["/py", "-S", "-c"] and argv[4:] == ["--", "a", "b"]


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_the_wrapper_boot_quotes_any_path_as_one_double_quoted_literal(text):
    literal = _literal(text)
    assert literal[0] == literal[-1] == '"' and ast.literal_eval(literal) == text
    assert literal.isascii() and literal.isprintable()


@pytest.mark.parametrize("where", ["launcher's copy", "elsewhere"])
def test_wrapper_boot_finds_the_package_without_site(where):
    # the wrapper starts with -S: from the launcher's copy, or via site when the node's
    # machine has no copy at that path
    boot = node_argv([])[3]
    if where == "elsewhere":
        assert boot.count('"/') == 1
        boot = boot.replace(boot[boot.index('"/'):boot.index('";')], '"/nonexistent/dir')
    done = subprocess.run([sys.executable, "-S", "-c", boot, "--"], check=False, capture_output=True,
                          text=True, timeout=60)
    # no command after "--": the wrapper itself answers with its usage line
    assert done.returncode == 2 and "usage: python -m distrcomp.launcher.node" in done.stderr, done

"""Every script in examples/ runs under real mpiexec, and its own result check can fail.

The numeric examples check themselves against a serial computation and exit 1 on a mismatch.
For each, a control run corrupts the data in flight (a wrapper patches one distrcomp function,
then runs the unchanged example) and must end in that mismatch exit.
"""

from __future__ import annotations

import re
import subprocess
import textwrap
from pathlib import Path

import pytest

from distrcomp.launcher.script import compat_dir

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TIMEOUT = 300  # generous: 4 ranks share 2 cores; a hang still ends the test
SIZES = [1, 2, 4]


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout


def said(pattern: str, out: str) -> list:
    """Every match of ``pattern`` in ``out``, sorted (mpiexec may interleave nodes mid-line)."""
    return sorted(re.findall(pattern, out))


def corrupted(job, tmp_path: Path, n: int, example: str, patch: str) -> subprocess.CompletedProcess:
    """Run ``example`` unchanged after ``patch`` (code with ``dc`` imported) has run on every node."""
    wrapper = tmp_path / "corrupted.py"
    wrapper.write_text(
        "import runpy\nimport numpy as np\nimport distrcomp as dc\n"
        + textwrap.dedent(patch)
        + f"\nrunpy.run_path({str(EXAMPLES / example)!r}, run_name='__main__')\n"
    )
    return job(n, wrapper, timeout=TIMEOUT)


# ---------------------------------------------------------------------------------- rings
@pytest.mark.parametrize("n", SIZES)
def test_ring(job, n: int) -> None:
    out = ok(job(n, EXAMPLES / "ring.py", timeout=TIMEOUT))
    assert said(r"node \d+ of \d+ got: '[^']*'", out) == [
        f"node {k} of {n} got: 'hello from node {(k - 1) % n}'" for k in range(n)
    ]


@pytest.mark.parametrize("n", [2, 4])
def test_legacy_ring(job, n: int) -> None:
    done = job(n, EXAMPLES / "legacy_ring.py", timeout=TIMEOUT, env={"PYTHONPATH": compat_dir()})
    assert said(r"Next to \d+ is \d+", ok(done)) == [f"Next to {k} is {(k + 1) % n}" for k in range(n)]
    # One node would send to itself: that is covered in test_compat.py (it must fail, clearly).


# ----------------------------------------------------------------------------- halo
@pytest.mark.parametrize("n", SIZES)
def test_halo(job, n: int) -> None:
    out = ok(job(n, EXAMPLES / "halo.py", timeout=TIMEOUT))
    assert f"{n} nodes, 100000 cells, 300 steps: identical to the serial result" in out


@pytest.mark.parametrize("n", [1, 2, 4])
def test_halo_detects_a_corrupted_halo(job, tmp_path: Path, n: int) -> None:
    done = corrupted(job, tmp_path, n, "halo.py", """
        real_recv = dc.recv

        def recv(src, tag=dc.ANY_TAG, timeout=None):
            got = real_recv(src, tag, timeout)
            return got + 1e-9 if tag == 2 else got   # only the halos from the left

        dc.recv = recv
    """)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"MISMATCH on {n} nodes" in done.stdout


# ------------------------------------------------------------------------ task farm
@pytest.mark.parametrize("n", SIZES)
def test_task_farm(job, n: int) -> None:
    out = ok(job(n, EXAMPLES / "task_farm.py", timeout=TIMEOUT))
    assert "216816 primes below 3000000, as counted serially" in out  # pi(3e6) = 216816
    shares = {int(k): int(v) for k, v in re.findall(r"node (\d+): (\d+)", out)}
    assert sum(shares.values()) == 48
    # Node 0 only hands out work when there are workers; every worker got some.
    assert sorted(shares) == ([0] if n == 1 else list(range(1, n)))


@pytest.mark.parametrize("n", [2, 4])
def test_task_farm_detects_a_wrong_result(job, tmp_path: Path, n: int) -> None:
    done = corrupted(job, tmp_path, n, "task_farm.py", """
        real_send = dc.send

        def send(dest, obj, tag=0):
            if dc.node_id == n - 1 and obj is not None and dest == 0:
                task, count = obj
                obj = (task, count + 1)          # the last worker miscounts
            real_send(dest, obj, tag)

        n = dc.n_node
        dc.send = send
    """)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "MISMATCH" in done.stdout


# ------------------------------------------------------------------------------- pi
@pytest.mark.parametrize("n", SIZES)
def test_pi(job, n: int) -> None:
    out = ok(job(n, EXAMPLES / "pi.py", timeout=TIMEOUT))
    (value,) = re.findall(rf"pi ~ (\d\.\d+) on {n} nodes", out)
    assert abs(float(value) - 3.141592653589793) < 1e-12


@pytest.mark.parametrize("n", [2, 4])
def test_pi_detects_a_missing_share(job, tmp_path: Path, n: int) -> None:
    done = corrupted(job, tmp_path, n, "pi.py", """
        dc.allreduce = lambda obj, op="sum": obj    # no sum: node 0 keeps only its own share
    """)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "MISMATCH" in done.stdout


def test_every_example_is_tested() -> None:
    tested = {"ring.py", "legacy_ring.py", "halo.py", "task_farm.py", "pi.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_examples_have_no_syntax_problem() -> None:
    from distrcomp.launcher.script import py2_problem

    for path in EXAMPLES.glob("*.py"):
        assert py2_problem(path) is None, path

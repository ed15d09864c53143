"""Shared fixtures. Layout: unit/ (no MPI), mpi/ (pytest-mpi, run under mpiexec by
test_mpi_suite.py), jobs/ (whole MPI jobs as subprocesses), launcher/ (the CLI), cluster/ (hosts)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List, Sequence, Union

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

# Open MPI refuses to run as root unless told; the tests tell it, the library never does.
os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool:
    # tests/mpi holds pytest-mpi tests: collected only inside mpiexec (--with-mpi).
    if collection_path == TESTS / "mpi" and not config.getoption("--with-mpi", default=False):
        return True
    return False


def mpiexec_argv(n: int) -> List[str]:
    """``mpiexec -n N`` for the installed MPI, oversubscribing where that MPI needs it."""
    from distrcomp.launcher.flavor import detect

    flavor = detect()
    return [flavor.mpiexec, *flavor.oversubscribe_args(), "-n", str(n)]


def run_job(
    n: int,
    command: Union[str, Path, Sequence[str]],
    timeout: float = 120,
    env: Union[dict, None] = None,
    **kwargs,
) -> subprocess.CompletedProcess:
    """Run ``command`` (a .py path, or an argv) on ``n`` ranks under real mpiexec; capture output."""
    if isinstance(command, (str, Path)):
        command = [sys.executable, str(command)]
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [*mpiexec_argv(n), *command],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        **kwargs,
    )


@pytest.fixture
def job():
    """The :func:`run_job` helper, as a fixture."""
    return run_job

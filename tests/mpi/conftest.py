"""Runs inside every rank of ``mpiexec -n K python -m pytest --with-mpi tests/mpi``.

When DISTRCOMP_JUNIT_DIR is set (test_mpi_suite.py sets it), each rank writes its own JUnit
report there, so the driver can check that every rank ran tests and none failed.
"""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    directory = os.environ.get("DISTRCOMP_JUNIT_DIR")
    if directory:
        from mpi4py import MPI

        rank = MPI.COMM_WORLD.Get_rank()
        config.option.xmlpath = os.path.join(directory, f"rank-{rank}.xml")


@pytest.fixture
def dc():
    """The distrcomp module, initialised."""
    import distrcomp

    distrcomp.node_id  # noqa: B018 - first use initialises MPI on every rank
    return distrcomp


@pytest.fixture(autouse=True)
def _in_step(dc):
    """Every rank finishes a test before any rank starts the next one, so that a test's
    any-source receive can only see that test's messages."""
    yield
    dc.barrier()

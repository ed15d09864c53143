"""Runs inside every rank of ``mpiexec -n K python -m pytest --with-mpi tests/mpi``.

When DISTRCOMP_JUNIT_DIR is set (test_mpi_suite.py sets it), each rank writes its own JUnit
report there, so the driver can check that every rank ran tests and none failed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

import pytest

_FAILED = pytest.StashKey[bool]()  # this rank's session had a failing test (pytest_unconfigure)


def pytest_configure(config: pytest.Config) -> None:
    directory = os.environ.get("DISTRCOMP_JUNIT_DIR")
    if directory:
        from mpi4py import MPI

        rank = MPI.COMM_WORLD.Get_rank()
        config.option.xmlpath = os.path.join(directory, f"rank-{rank}.xml")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_FAILED] = session.testsfailed > 0


def pytest_unconfigure(config: pytest.Config) -> None:
    """A rank whose session failed aborts the job, once its report is written and printed.

    With ``-x`` it stops at its first failure while the other ranks go on to the next test and
    wait for it there, and its own exit would wait for them (distrcomp's exit handshake): the
    job then hung until the driver's time limit. MPI_Abort ends every rank at once instead.
    """
    if not config.stash.get(_FAILED, False):
        return
    from mpi4py import MPI

    if MPI.Is_initialized() and not MPI.Is_finalized() and MPI.COMM_WORLD.Get_size() > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        MPI.COMM_WORLD.Abort(1)


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


class Interrupted(Exception):
    """What :func:`interrupt_after`'s timer raises, as Ctrl-C's KeyboardInterrupt would."""


@pytest.fixture
def interrupt_after():
    """``with interrupt_after(seconds):`` expects the block to be interrupted by a signal
    handler raising :class:`Interrupted` after ``seconds`` (a real SIGALRM), and fails the test
    if the block ends otherwise."""

    def _raise(signum, frame):
        raise Interrupted

    @contextlib.contextmanager
    def interrupted(seconds: float):
        previous = signal.signal(signal.SIGALRM, _raise)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            with pytest.raises(Interrupted):
                yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    return interrupted

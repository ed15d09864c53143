"""Fixtures for the Slurm tests: a real Slurm cluster in network namespaces (``slurmhosts.py``).

``slurm`` (session scope) is a :class:`slurmhosts.SlurmCluster` that is up: nodes ``dcsl-h1..3``
with 2 CPUs each, a login node where ``salloc``/``sbatch``/``distrcomp run`` run
(``slurm.run``), ``slurm.steps()`` (``squeue`` of job steps), ``slurm.stray_processes(node)``.
It skips when the machine cannot build the cluster, or fails instead when
``DISTRCOMP_REQUIRE_SLURM=1`` (CI; ``bash .ci/slurm-setup.sh`` installs what it needs).

``on_login(*argv, start=False, timeout=180)`` runs a command on the login node in ``tmp_path``
(which every node sees at the same path) with this venv first on PATH, ``UCX_TLS=tcp`` and
``SLURM_CONF``, and returns a finished (or, with ``start``, running) ``DistrcompRun``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest
from cluster.conftest import DistrcompRun, _interrupt_on_sigterm
from cluster.hosts import SEPARATE_MACHINES, ClusterUnavailable

from .slurmhosts import SlurmCluster


@pytest.fixture(scope="session")
def slurm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[SlurmCluster]:
    """The Slurm cluster, up for the whole session and torn down after it (also on failure,
    Ctrl-C, SIGTERM and at exit)."""
    # The nodes have a /tmp of their own: what they must see at the same path as here (pytest's
    # temp root, this checkout and this venv, when they are under /tmp, as in CI's clean clone)
    # is bind-mounted into it, as a cluster's shared file system would provide.
    root = Path(__file__).resolve().parents[2]
    share = [tmp_path_factory.getbasetemp(), root, Path(sys.prefix)]
    cluster = SlurmCluster(share=list(dict.fromkeys(path.resolve() for path in share)))
    request.addfinalizer(_interrupt_on_sigterm())
    request.addfinalizer(cluster.down)
    try:
        cluster.up()
    except ClusterUnavailable as exc:
        if os.environ.get("DISTRCOMP_REQUIRE_SLURM") == "1":
            pytest.fail(f"DISTRCOMP_REQUIRE_SLURM=1 but the Slurm test cluster cannot be built: "
                        f"{exc}", pytrace=False)
        pytest.skip(f"Slurm test cluster unavailable: {exc}")
    yield cluster


@pytest.fixture
def login_env(slurm: SlurmCluster) -> dict[str, str]:
    """The environment of a command on the login node: this venv first on PATH,
    ``UCX_TLS=tcp`` (see ``cluster/hosts.py``) and ``SLURM_CONF``."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, **SEPARATE_MACHINES, **slurm.env(),
            "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}


@pytest.fixture
def on_login(slurm: SlurmCluster, login_env: dict[str, str], tmp_path: Path
             ) -> Callable[..., DistrcompRun]:
    """``f(*argv, start=False, timeout=180)``: ``argv`` on the login node (see the module
    docstring)."""

    def run(*argv: str, start: bool = False, timeout: float = 180) -> DistrcompRun:
        job = DistrcompRun(slurm.in_launcher(list(argv)), login_env, tmp_path)
        return job if start else job.wait(timeout)

    return run


@pytest.fixture
def no_leftovers(slurm: SlurmCluster) -> Iterator[None]:
    """After the test: no job step known to Slurm, no process but slurmd on any node."""
    yield
    left = slurm.wait_no_strays(timeout=20)
    steps = slurm.steps()
    if left:
        slurm.kill_strays()
    assert not left, f"processes survived on the nodes: {left}"
    assert not steps, f"job steps left: {steps}"

"""Fixtures for multi-host tests: three ssh hosts in network namespaces (see ``hosts.py``).

``cluster`` (session scope) is a :class:`hosts.Cluster` that is up: ``cluster.hosts`` (name,
address, netns), ``cluster.ssh_config`` / ``ssh_wrapper`` / ``env()``, ``cluster.run`` (a command in
the launcher namespace), ``cluster.ssh``, and ``cluster.stray_processes(name)`` /
``wait_no_strays()`` for "no process survives" checks. It skips when the machine cannot build
hosts, or fails instead when ``DISTRCOMP_REQUIRE_CLUSTER=1`` (CI).

``mpiexec_across`` builds the mpiexec command line that runs across the hosts for the installed
MPI, with the flags of ``mpi_flags.py`` (README.md, "MPI across hosts").

``distrcomp`` runs ``distrcomp run`` in the launcher namespace (the product across the hosts):
``distrcomp(peers_lines, *args)`` writes a peers file, adds ``--ssh-config``, and returns a
:class:`DistrcompRun` (``start`` for a job to interact with while it runs).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Callable

import pytest

from .hosts import SEPARATE_MACHINES, Cluster, ClusterUnavailable
from .mpi_flags import hosts_args, route_args, ssh_args

HERE = Path(__file__).resolve().parent
RING = HERE / "mpi_ring.py"


def _unavailable(reason: str) -> None:
    if os.environ.get("DISTRCOMP_REQUIRE_CLUSTER") == "1":
        pytest.fail(f"DISTRCOMP_REQUIRE_CLUSTER=1 but the test hosts cannot be built: {reason}",
                    pytrace=False)
    pytest.skip(f"test hosts unavailable: {reason}")


def _interrupt_on_sigterm() -> Callable[[], None]:
    """Let SIGTERM (a CI time limit, ``kill``) end the session like Ctrl-C, so that finalizers
    run; by default it would end Python at once and leave the hosts to the next ``up``.
    Returns the function that puts the previous handler back."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, interrupt)
    return lambda: signal.signal(signal.SIGTERM, previous) if previous is not None else None


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """Three hosts h1..h3 with sshd, up for the whole session and torn down after it (also when
    tests fail, on Ctrl-C or SIGTERM, and at exit)."""
    hosts = Cluster()
    request.addfinalizer(_interrupt_on_sigterm())
    request.addfinalizer(hosts.down)  # finalizers run last-in first-out: down, then the handler
    try:
        hosts.up()
    except ClusterUnavailable as exc:
        _unavailable(str(exc))
    yield hosts


@pytest.fixture(scope="session")
def flavor():
    """The installed MPI (``distrcomp.launcher.flavor.detect``); skips if there is none."""
    from distrcomp.launcher.flavor import MPIError, detect

    try:
        return detect()
    except MPIError as exc:
        pytest.skip(str(exc))


@pytest.fixture
def mpiexec_across(cluster: Cluster, flavor) -> Callable[..., list[str]]:
    """``f(n, command, hosts=None, per_host=1, launcher_cidr=<eth0>)`` → full argv to run in the
    launcher namespace (``cluster.run``). ``command`` defaults to the ring program; hosts default
    to the addresses of h1..h3."""

    def build(
        n: int,
        command: Sequence[str] | None = None,
        hosts: Sequence[str] | None = None,
        per_host: int = 1,
        launcher_cidr: str | None = f"{cluster.launcher_address}/{cluster.prefixlen}",
    ) -> list[str]:
        hosts = hosts or [h.address for h in cluster.hosts]
        command = command or [sys.executable, str(RING)]
        return [
            flavor.mpiexec,
            *ssh_args(flavor.name, str(cluster.ssh_wrapper), str(cluster.ssh_config)),
            *route_args(flavor.name, launcher_cidr),
            *hosts_args(flavor.name, hosts, per_host),
            "-n", str(n),
            *command,
        ]

    return build


@pytest.fixture
def no_survivors(cluster: Cluster) -> Iterator[None]:
    """After the test, assert that no process other than sshd is left on any host."""
    yield
    left = cluster.wait_no_strays(timeout=15)
    if left:
        cluster.kill_strays()  # so that one failure does not leak into the next test
    assert not left, f"processes survived on the hosts: {left}"


class DistrcompRun:
    """One ``distrcomp run`` in the launcher namespace: ``proc`` while it runs; ``returncode``,
    ``stdout``, ``stderr`` and ``elapsed`` once :meth:`wait` returned."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.argv = argv
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     errors="replace")
        self.returncode: int | None = None
        self.stdout = self.stderr = ""
        self.elapsed = 0.0

    def wait(self, timeout: float = 180) -> DistrcompRun:
        """Wait for the end (fails the test after ``timeout`` s, killing the launcher)."""
        try:
            self.stdout, self.stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.stdout, self.stderr = self.proc.communicate()
            pytest.fail(f"distrcomp run did not end within {timeout} s:\n{self}")
        self.elapsed = time.monotonic() - self.started
        self.returncode = self.proc.returncode
        return self

    def __repr__(self) -> str:
        return (f"exit {self.returncode} after {self.elapsed:.1f} s\n--- stdout\n"
                f"{self.stdout[-4000:]}\n--- stderr\n{self.stderr[-4000:]}")


@pytest.fixture
def distrcomp(cluster: Cluster, tmp_path: Path) -> Callable[..., DistrcompRun]:
    """``f(peers, *args, ssh_config=cluster.ssh_config, env=None, start=False, timeout=180)``:
    ``distrcomp run --peers <file with the lines peers> --ssh-config FILE *args`` in the launcher
    namespace (``-x UCX_TLS`` added), in ``tmp_path``, with this venv's ``bin`` first on PATH (so ``python`` is this
    Python, on every host: the hosts share the file system) and ``UCX_TLS=tcp``. ``peers`` may
    be None (no peers file). Returns the finished run, or the running one with ``start=True``."""

    def run(peers: Sequence[str] | None, *args: str, ssh_config: Path | None = None,
            env: dict[str, str] | None = None, start: bool = False,
            timeout: float = 180) -> DistrcompRun:
        argv = [sys.executable, "-m", "distrcomp", "run"]
        if peers is not None:
            (tmp_path / "peers.txt").write_text("".join(f"{line}\n" for line in peers))
            argv += ["--peers", str(tmp_path / "peers.txt")]
        # Only named variables reach remote nodes (-x), UCX_TLS=tcp too (see SEPARATE_MACHINES).
        argv += ["--ssh-config", str(ssh_config or cluster.ssh_config), "-x", "UCX_TLS", *args]
        bin_dir = str(Path(sys.executable).parent)
        full_env = {**os.environ, **SEPARATE_MACHINES, **(env or {}),
                    "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
        job = DistrcompRun(cluster.in_launcher(argv), full_env, tmp_path)
        return job if start else job.wait(timeout)

    return run


@pytest.fixture(scope="session")
def addresses(cluster: Cluster) -> list[str]:
    """The addresses of h1, h2, h3: a peers file's lines."""
    return [host.address for host in cluster.hosts]

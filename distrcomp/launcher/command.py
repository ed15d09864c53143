"""What the launcher runs: the user's command as given, wrapped per node, under mpiexec."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .flavor import Flavor

__all__ = ["WRAPPER_MODULE", "mpiexec_argv", "node_argv", "user_command"]

WRAPPER_MODULE = "distrcomp.launcher.node"


def user_command(words: Sequence[str], python: str = sys.executable) -> list[str]:
    """The command a node runs: ``prog.py ARGS`` runs with ``python``; anything else as given.

    Raises ValueError for an empty command.
    """
    if not words:
        raise ValueError("no command given")
    if words[0].endswith(".py"):
        return [python, *words]
    return list(words)


def node_argv(command: Sequence[str], python: str = sys.executable) -> list[str]:
    """``command`` run under the per-node wrapper (:mod:`distrcomp.launcher.node`)."""
    return [python, "-m", WRAPPER_MODULE, "--", *command]


def mpiexec_argv(
    flavor: Flavor,
    n: int,
    program: Sequence[str],
    hostfile: str | None = None,
    env_names: Sequence[str] = (),
    mpi_args: Sequence[str] = (),
) -> list[str]:
    """The mpiexec command line starting ``program`` as ``n`` processes.

    ``hostfile`` (None: every process on this machine) places them; ``env_names`` are forwarded
    by name (values come from mpiexec's environment, so secrets never appear here);
    ``mpi_args`` are passed through just before the program. Oversubscription is always
    allowed: the slots a peers file gives (or ``-n`` on one machine) are what the user wants,
    even beyond the cores MPI counts.
    """
    argv = [flavor.mpiexec, *flavor.oversubscribe_args()]
    if hostfile is not None:
        argv += flavor.hostfile_args(hostfile)
    argv += ["-n", str(n)]
    argv += flavor.env_args(list(env_names))
    argv += list(mpi_args)
    argv += list(program)
    return argv

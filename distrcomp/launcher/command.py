"""What the launcher runs: the user's command as given, wrapped per node, under mpiexec."""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the launcher's start-up)
if TYPE_CHECKING:
    from collections.abc import Sequence
del TYPE_CHECKING

from .flavor import Flavor

__all__ = ["WRAPPER_MODULE", "mpiexec_argv", "node_argv", "user_command"]

WRAPPER_MODULE = "distrcomp.launcher.node"

# The wrapper starts once per node before the command can start, so it runs without ``site``
# (``-S``: in an editable install, site alone costs more than the rest of its start-up),
# importing distrcomp from where the launcher's copy is, or, if the node's machine has no copy
# there, from the interpreter's site directories after all.
_BOOT = (
    "import os, sys; where = {where}; "
    "sys.path.append(where) if os.path.isfile(os.path.join(where, {marker})) "
    'else __import__("site").main(); '
    "from {module} import main; sys.exit(main())"
)


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
    """``command`` run under the per-node wrapper :mod:`distrcomp.launcher.node`, started by
    ``python -S -c BOOT -- COMMAND`` (see ``_BOOT``)."""
    here = os.path.abspath(__file__)  # .../distrcomp/launcher/command.py
    where = os.path.dirname(os.path.dirname(os.path.dirname(here)))
    marker = os.path.join("distrcomp", "launcher", "node.py")
    boot = _BOOT.format(where=_literal(where), marker=_literal(marker), module=WRAPPER_MODULE)
    return [python, "-S", "-c", boot, "--", *command]


def _literal(text: str) -> str:
    """``text`` as a double-quoted Python literal (so the shell-quoted command line stays
    plain): printable ASCII as it is, but ``"`` and ``\\``, escaped; every other character as
    ``\\UXXXXXXXX``. (Not ``json.dumps``: json imports re and enum, ~7 ms of the launcher's
    start-up, which delays every node.)"""
    escaped = (
        "\\" + char if char in '"\\'
        else char if " " <= char <= "~"
        else f"\\U{ord(char):08x}"
        for char in text
    )
    return '"' + "".join(escaped) + '"'


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

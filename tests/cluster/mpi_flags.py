"""The mpiexec flags each MPI needs to run across the test hosts: the reference for the launcher.

Two things must be told to mpiexec when the peers are other machines:

* which ssh to use (here: one with the per-run ``ssh_config``). MPICH hydra takes an executable
  (``-launcher-exec`` or ``HYDRA_LAUNCHER_EXEC``; no arguments allowed, hence a wrapper script);
  Open MPI 5 takes a command line (``--mca plm_ssh_agent "ssh -F FILE"`` or
  ``PRTE_MCA_plm_ssh_agent``).
* how the peers reach the launcher. MPICH proxies dial the launcher's *hostname* unless given
  ``-localhost ADDR``; Open MPI daemons dial every address of the launcher in turn unless
  ``oob_tcp_if_include`` names the subnet (and ``btl_tcp_if_include`` does the same for rank to
  rank traffic).

And one thing differs for the ranks' environment: MPICH forwards the launcher's whole environment
(``PATH`` included, so a bare ``python`` is the launcher's); Open MPI forwards none of it unless
named with ``-x NAME`` (a bare ``python`` is whatever the remote login shell's ``PATH`` finds).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

__all__ = ["env_args", "hosts_args", "route_args", "ssh_args"]

MPICH, OPENMPI = "mpich", "openmpi"


def ssh_args(flavor: str, wrapper: str, ssh_config: str) -> list[str]:
    """Make mpiexec start its remote side with ``ssh -F ssh_config`` (``wrapper`` runs just that)."""
    if flavor == MPICH:
        return ["-launcher", "ssh", "-launcher-exec", wrapper]
    return ["--mca", "plm_ssh_agent", f"ssh -F {ssh_config}"]


def route_args(flavor: str, launcher_cidr: str | None) -> list[str]:
    """Tell the MPI which of the launcher's interfaces routes to the peers.

    ``launcher_cidr`` is that interface's address with its prefix (``10.77.0.1/24``); None leaves
    the choice to the MPI. MPICH: ``-localhost ADDR``. Open MPI: the interface's network as
    ``oob_tcp_if_include`` and ``btl_tcp_if_include``.
    """
    if not launcher_cidr:
        return []
    interface = ipaddress.ip_interface(launcher_cidr)
    if flavor == MPICH:
        return ["-localhost", str(interface.ip)]
    net = str(interface.network)
    return ["--mca", "oob_tcp_if_include", net, "--mca", "btl_tcp_if_include", net]


def hosts_args(flavor: str, hosts: Sequence[str], per_host: int = 1) -> list[str]:
    """``-hosts a:k,b:k`` (MPICH) or ``--host a:k,b:k`` (Open MPI): ``per_host`` slots each."""
    spec = ",".join(f"{h}:{per_host}" for h in hosts)
    return ["-hosts", spec] if flavor == MPICH else ["--host", spec]


def env_args(flavor: str, names: Sequence[str]) -> list[str]:
    """Forward the launcher's values of ``names`` to every rank (MPICH does so for all names)."""
    if flavor == MPICH:
        return []
    return [arg for name in names for arg in ("-x", name)]

"""``[Host]`` → the text of a hostfile, in the syntax of MPICH (hydra) or Open MPI.

MPICH: ``name:slots`` per line (hydra splits on ``:``, so it cannot take IPv6 addresses).
Open MPI: ``name slots=N`` per line (IPv6 addresses are fine).
"""

from __future__ import annotations

from .flavor import MPICH, OPENMPI
from .peers import Host

__all__ = ["HostfileError", "render"]


class HostfileError(ValueError):
    """A host cannot be written in the requested MPI's hostfile syntax; ``line`` is its line in
    the peers file."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


def render(hosts: list[Host], flavor: str) -> str:
    """The hostfile for ``flavor`` (``"mpich"`` or ``"openmpi"``) listing ``hosts`` in order.

    Ends with a newline. Raises HostfileError for an IPv6 address with MPICH (naming the host
    and its peers-file line) and ValueError for an unknown flavour.
    """
    if flavor == MPICH:
        for host in hosts:
            if host.is_ipv6:
                raise HostfileError(
                    host.line,
                    f"MPICH hostfiles cannot hold the IPv6 address {host.name!r} (hydra splits "
                    "host entries on ':'); give the host a name, e.g. in /etc/hosts",
                )
        return "".join(f"{host.name}:{host.slots}\n" for host in hosts)
    if flavor == OPENMPI:
        return "".join(f"{host.name} slots={host.slots}\n" for host in hosts)
    raise ValueError(f"unknown MPI flavour {flavor!r} (expected {MPICH!r} or {OPENMPI!r})")

"""The old DistrComp master's output, for ``distrcomp run --legacy-master``.

The old ``master.py`` printed on stdout, for each node as it finished, one block holding
everything that node's commands wrote, stdout and stderr together::

    --------(Node 192.168.0.113 returns)--------
    My ID is 3
    Next to 2 is 3

and, once every node had returned, ``Total time : 1.523.`` (the launcher prints that line).
:class:`Blocks` does the same across the jobs a master.py becomes (one mpiexec job per command): it keeps each node's lines
from job to job, in the order they reach the launcher, and prints a node's block when that node
has finished its last command. Nothing else is written to stdout in this mode, so a block is
never cut by another line; the launcher's own notes and failure summaries go to stderr.
"""

from __future__ import annotations

import os

from .relay import Sink, write_block

__all__ = ["Blocks", "header"]

_SPOOL = 8 << 20  # a node's block beyond this goes to a temporary file


def header(host: str) -> bytes:
    """The line that opens a node's block: ``--------(Node 10.0.0.3 returns)--------``."""
    return f"--------(Node {host} returns)--------\n".encode("utf-8", "replace")


class Blocks:
    """Each node's output over ``commands`` jobs, printed as one block per node on ``stdout``.

    ``hosts[i]`` is node i's host, shown in its header. :meth:`lines` adds a node's lines (from
    either stream, in arrival order); :meth:`finished` says the node ended one command and
    prints its block, at once, after its ``commands``-th; :meth:`close` prints, in node order,
    the blocks of nodes never seen to finish (a node that never started, a job interrupted).
    Blocks are written whole, each ending with a blank line. Not thread-safe: the launcher's
    one loop calls it.
    """

    def __init__(self, hosts: list[str], commands: int, stdout: Sink) -> None:
        import tempfile  # only here: the launcher's start-up delays every node

        self._hosts = hosts
        self._commands = commands
        self._out = stdout
        self._escape = os.isatty(stdout.fd)  # on a terminal, as tagged output (relay.write_block)
        self._spools = [tempfile.SpooledTemporaryFile(_SPOOL) for _ in hosts]  # noqa: SIM115
        self._ended = [0] * len(hosts)
        self._shown = [False] * len(hosts)

    def lines(self, node: int, data: bytes) -> None:
        """Keep ``data`` (whole lines; a last one without newline gets one) for ``node``'s block."""
        self._spools[node].write(data if data.endswith(b"\n") else data + b"\n")

    def finished(self, node: int) -> None:
        """``node`` ended one command; after its last, its block is printed."""
        self._ended[node] += 1
        if self._ended[node] >= self._commands:
            self._show(node)

    def close(self) -> None:
        """Print the blocks not printed yet, in node order; release the spooled output."""
        for node in range(len(self._hosts)):
            self._show(node)
        for spool in self._spools:
            spool.close()

    def _show(self, node: int) -> None:
        if self._shown[node]:
            return
        self._shown[node] = True
        spool = self._spools[node]
        self._out.write(header(self._hosts[node]))
        write_block(spool, self._out, self._escape)
        self._out.write(b"\n")
        self._out.flush()
        spool.seek(0)
        spool.truncate()

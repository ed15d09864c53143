"""How each node ended, which failure caused the job to end, the summary and the exit code.

Exit codes of ``distrcomp run``: 0 if every node succeeded; else the exit status of the node
whose failure ended the job (128 + N if it was killed by signal N); 124 when ``--timeout``
expired; 130 / 143 / 129 when the launcher was interrupted by SIGINT / SIGTERM / SIGHUP;
2 for a usage error (bad option, bad peers file, no MPI), before anything is launched.
"""

from __future__ import annotations

from _signal import SIGINT, SIGKILL, SIGTERM  # not signal: it imports enum (see .job)

__all__ = ["EXIT_TIMEOUT", "EXIT_USAGE", "NodeResult", "abort_code", "describe", "exit_status",
           "root_cause", "signal_name", "summary"]

EXIT_USAGE = 2
EXIT_TIMEOUT = 124
_CONSEQUENTIAL = (SIGKILL, SIGTERM, SIGINT)  # how MPI and we stop nodes
# What MPICH, Open MPI and distrcomp's excepthook print on the stderr of a process that aborts
# (compiled when a node fails: re is ~7 ms of the launcher's start-up, with enum).
_ABORT = (
    r"MPI_Abort\(\s*\w+\s*,\s*(-?\d+)\s*\)"  # MPICH: called MPI_Abort(MPI_COMM_WORLD, 1)
    r"|MPI_ABORT was invoked.*?errorcode\s+(-?\d+)"  # Open MPI
    r"|aborting every node with code (-?\d+)"  # distrcomp, before it calls MPI_Abort
)


class NodeResult:
    """How one node ended, as far as the launcher knows.

    ``returncode`` follows :mod:`subprocess`: negative means killed by that signal; None means
    unknown (the node never started, or its wrapper was lost). ``stopped`` is True when the
    launcher had told the node to stop before it ended; ``failed_at`` orders failures as they
    were observed (monotonic seconds); ``aborted`` is the error code if the node called
    ``MPI_Abort``. (Not a dataclass: see :class:`.job.JobSpec`.)
    """

    def __init__(
        self, node: int, host: str, returncode: int | None = None, *, started: bool = False,
        lost: bool = False, stopped: bool = False, failed_at: float | None = None,
        stderr_tail: list[str] | None = None, aborted: int | None = None,
    ) -> None:
        self.node = node
        self.host = host
        self.returncode = returncode
        self.started = started
        self.lost = lost
        self.stopped = stopped
        self.failed_at = failed_at
        self.stderr_tail = [] if stderr_tail is None else stderr_tail
        self.aborted = aborted

    def __repr__(self) -> str:
        return f"NodeResult({vars(self)!r})"

    @property
    def ok(self) -> bool:
        """True if the node's command exited with status 0."""
        return self.returncode == 0 and not self.lost


def abort_code(stderr: str) -> int | None:
    """The error code of an ``MPI_Abort`` the node's stderr reports, or None if none does."""
    import re

    match = re.search(_ABORT, stderr, re.DOTALL)
    if match is None:
        return None
    return int(match.group(1) or match.group(2) or match.group(3))


def exit_status(returncode: int) -> int:
    """A :mod:`subprocess` returncode as a shell exit status: ``-N`` (signal N) → ``128 + N``."""
    return 128 - returncode if returncode < 0 else returncode


def signal_name(number: int) -> str:
    """``SIGTERM`` for 15 (``signal 99`` for a number that names no signal here)."""
    import signal  # only to name one: see the imports above

    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def describe(result: NodeResult) -> str:
    """One phrase for how ``result``'s node ended, e.g. ``exit code 3``, ``killed by SIGKILL``."""
    if not result.started:
        return "never started (its wrapper did not connect to the launcher)"
    if result.lost:
        return "lost: its wrapper vanished without reporting how the command ended"
    code = result.returncode
    if code is None:
        return "still running when the launcher gave up on it"
    text = f"killed by {signal_name(-code)}" if code < 0 else f"exit code {code}"
    if result.aborted is not None:
        return f"called MPI_Abort with error code {result.aborted} ({text})"
    if result.stopped and code < 0:
        text += " (stopped by distrcomp)"
    return text


def root_cause(results: list[NodeResult], settle: float = 1.0) -> NodeResult | None:
    """The failure that ended the job, or None if no node failed.

    The first failure observed that the launcher did not cause by stopping the node (if all
    were caused so, the first of all) -- unless it is a death by SIGKILL/SIGTERM/SIGINT or a
    lost wrapper and, within ``settle`` seconds after it, some node failed otherwise (an exit
    code, another signal, or a reported ``MPI_Abort``): that node is the cause. When a node
    calls ``MPI_Abort``, MPI kills every node in the same instant, the aborting one too.
    """
    failed = sorted(
        (r for r in results if not r.ok and r.failed_at is not None),
        key=lambda r: (r.failed_at, r.node),
    )
    if not failed:
        return None
    first = next((r for r in failed if not r.stopped), failed[0])
    if _consequential(first):
        for other in failed:
            if not _consequential(other) and abs(other.failed_at - first.failed_at) <= settle:  # type: ignore[operator]
                return other
    return first


def _consequential(result: NodeResult) -> bool:
    if result.aborted is not None:
        return False
    code = result.returncode
    return result.lost or code is None or (code < 0 and -code in _CONSEQUENTIAL)


def summary(
    results: list[NodeResult],
    elapsed: float,
    cause: NodeResult | None = None,
    headline: str | None = None,
    total: bool = True,
) -> list[str]:
    """The closing lines: when a node failed, a headline and a table of every node that did
    not succeed (host, how it ended, last stderr lines); then, if ``total``,
    ``Total time : 1.234 s``."""
    lines: list[str] = []
    bad = [r for r in results if not r.ok]
    if headline is None and cause is not None:
        headline = f"distrcomp: node {cause.node} ({cause.host}) failed: {describe(cause)}"
    if headline:
        lines.append(headline)
    if bad:
        width = max(len(r.host) for r in bad)
        width = max(width, len("host"))
        lines.append(f"  {'node':>4}  {'host':<{width}}  result")
        for r in sorted(bad, key=lambda r: r.node):
            lines.append(f"  {r.node:>4}  {r.host:<{width}}  {describe(r)}")
            lines.extend(f"  {'':>4}  {'':<{width}}  | {text}" for text in r.stderr_tail)
    if total:
        lines.append(f"Total time : {elapsed:.3f} s")
    return lines

"""The launcher's side of :mod:`distrcomp.diag`: take the nodes' report and profile lines out of
their stderr, and say what they mean.

A node's line that starts with :data:`distrcomp.diag.MARK` is not relayed: :meth:`Reports.take`
keeps it (a ``report`` or a ``profile``). A round of reports begins with :meth:`Reports.ask`
(the launcher then tells every running node's wrapper to signal its processes) and is
complete once every node asked has answered or its wrapper has said that no process there can
(:meth:`Reports.decline`), or when the launcher gives up waiting; :func:`render` turns it into
the findings of :mod:`.waitgraph` followed by each node's details.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: job.py imports this
if TYPE_CHECKING:  # module at every launch, whose start-up delays every node
    from collections.abc import Collection, Mapping, Sequence
    from typing import Any

__all__ = ["MARK", "Reports", "render"]

MARK = b"\x1edistrcomp:"  # starts a line of distrcomp.diag's among a node's stderr lines


class Reports:
    """What the nodes of one job said: the current round of reports and the profiles."""

    def __init__(self) -> None:
        self.asked: set[int] = set()
        self.round: dict[int, dict[str, Any]] = {}
        self.declined: set[int] = set()  # asked, and no process there can report
        self.profiles: dict[int, dict[str, Any]] = {}
        self.errors: list[str] = []

    def take(self, node: int, lines: bytes) -> bytes:
        """Keep ``node``'s report and profile lines among ``lines`` (whole lines of its
        stderr); return the others, to relay."""
        import json

        kept = []
        for line in lines.splitlines(keepends=True):
            if not line.startswith(MARK):
                kept.append(line)
                continue
            kind, _, body = line[len(MARK):].partition(b" ")
            try:
                record = json.loads(body)
            except ValueError as exc:
                self.errors.append(f"distrcomp: node {node} wrote a malformed {kind.decode(errors='replace')} "
                                   f"line ({exc}); ignored")
                continue
            if kind == b"report":
                self.round[node] = record
            elif kind == b"profile":
                self.profiles[node] = record
        return b"".join(kept)

    def ask(self, nodes: Sequence[int]) -> None:
        """Begin a round of reports from ``nodes``."""
        self.asked = set(nodes)
        self.round = {}
        self.declined = set()

    def decline(self, node: int) -> None:
        """``node``'s wrapper found no process there that handles SIGUSR1: this round waits
        for no report from it (ignored for a node this round did not ask)."""
        if node in self.asked:
            self.declined.add(node)

    def complete(self) -> bool:
        """Every node asked in this round has answered, or said it cannot."""
        return self.asked <= set(self.round) | self.declined

    def finish_round(self) -> tuple[dict[int, dict[str, Any] | None], set[int]]:
        """The round's reports by node (None: no report) and the nodes that said they cannot
        report; ends the round."""
        got, declined = {node: self.round.get(node) for node in sorted(self.asked)}, self.declined
        self.asked, self.round, self.declined = set(), {}, set()
        return got, declined


def render(reports: Mapping[int, Mapping[str, Any] | None], ended: Mapping[int, str],
           n_node: int, declined: Collection[int] = ()) -> tuple[list[str], dict[int, list[str]]]:
    """``(findings, details)``: the lines of :func:`.waitgraph.findings` (or one saying none
    was found), and per node the lines of its details (its call, what it holds, its stack with
    the distrcomp call as its innermost line). ``declined``: the nodes without a report that
    said no process there handles SIGUSR1."""
    from .waitgraph import findings, label

    found = findings(reports, ended, n_node, declined) or ["no deadlock found among the reports"]
    details: dict[int, list[str]] = {}
    for node, report in sorted(reports.items()):
        if report is None:
            details[node] = ["no process handles SIGUSR1" if node in declined else "no report"]
            continue
        call = report.get("call")
        if call is None:
            head = "not in a distrcomp call"
        else:
            head = f"blocked in {label(call)} for {call['for']:.1f} s"
            if call["op"] == "send":
                head += f" ({call.get('bytes', 0)} bytes), waiting for node {call['peer']} to take it"
        held = report.get("held", [])
        if held:
            total = sum(count for _, _, count in held)
            where = ", ".join(f"{count} from node {src} (tag {tag})" for src, tag, count in held)
            head += f"; holds {total} message{'s' if total != 1 else ''} not yet received: {where}"
        lines = [head]
        stack = report.get("stack", "").rstrip("\n").splitlines()
        lines += stack
        if call is not None:
            lines.append(f"  in distrcomp: {label(call)}")
        details[node] = lines
    return found, details

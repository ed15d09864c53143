"""Why a job is stuck, in one line per finding, from the nodes' reports (:mod:`distrcomp.diag`).

:func:`findings` is a pure function of plain values, so that each rule can be tested alone:
the reports the nodes wrote (a dict per node, None for a node that did not answer) and the
nodes the launcher saw end. It names, in this order:

* cycles of nodes each blocked in ``recv``/``probe`` from the next:
  ``deadlock: node 0 recv(from 1) -> node 1 recv(from 0) -> node 0``;
* waits for a node that has finished (ended, or is in its exit handshake):
  ``node 3 waits in recv(from 5), but node 5 has finished``;
* sends waiting for a node that is not receiving (not in a distrcomp call: computing);
* collectives called in a different order (``nodes 0-2 in barrier #4, node 3 in bcast #4``),
  or called by some nodes while others wait elsewhere;
* messages that arrived and that no ``recv`` has taken, and the tag the holder waits for
  (the "wrong tag" bug);
* nodes where no process handles SIGUSR1, as their wrappers said (not distrcomp programs, or
  not yet initialised distrcomp);
* nodes that did not report although a process there handles SIGUSR1 (busy where no Python
  runs, or a program whose SIGUSR1 handler is not distrcomp's).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Optional

__all__ = ["findings", "label", "node_list"]

Report = Optional[Mapping[str, Any]]


def label(call: Mapping[str, Any]) -> str:
    """A blocked call in a few words: ``recv(from 1)``, ``send(to 2)``, ``barrier #3``."""
    op, peer = call["op"], call["peer"]
    who = "any" if peer < 0 else str(peer)
    if op in ("recv", "probe"):
        tag = "" if call["tag"] < 0 else f", tag {call['tag']}"
        return f"{op}(from {who}{tag})"
    if op == "send":
        return f"send(to {peer})"
    if op == "collective":
        root = f"(root={peer})" if peer >= 0 else ""
        return f"{call['name']}{root} #{call['seq']}"
    if op == "exit":
        return "its exit handshake"
    return str(op)


def node_list(nodes: list[int]) -> str:
    """``node 3`` or ``nodes 0-2, 5``."""
    nodes = sorted(nodes)
    runs: list[str] = []
    start = prev = nodes[0]
    for node in [*nodes[1:], None]:
        if node is not None and node == prev + 1:
            prev = node
            continue
        runs.append(str(start) if start == prev else f"{start}-{prev}")
        if node is not None:
            start = prev = node
    return ("node " if len(nodes) == 1 else "nodes ") + ", ".join(runs)


def findings(reports: Mapping[int, Report], ended: Mapping[int, str], n_node: int,
             declined: Collection[int] = ()) -> list[str]:
    """The lines that say why the job is stuck (empty if nothing is found).

    ``reports`` maps each node still running to its report (None: it did not answer);
    ``ended`` maps each node that ended to how (``exit code 0``); ``declined`` names the nodes
    without a report whose wrapper said no process there handles SIGUSR1.
    """
    calls = {node: r["call"] for node, r in reports.items() if r is not None and r.get("call")}
    finished = set(ended) | {node for node, call in calls.items() if call["op"] == "exit"}
    lines = _cycles(calls)
    lines += _waits_on_finished(calls, finished, n_node)
    lines += _sends_to_idle(calls, reports, finished)
    lines += _collectives(calls)
    lines += _held(reports)
    # a node that ended since it was asked had nothing left to signal: it is said to have ended
    without = [node for node, r in reports.items()
               if r is None and node in declined and node not in ended]
    if without:
        lines.append(f"{node_list(without)}: no process there handles SIGUSR1 (not a distrcomp "
                     "program, or one that has not initialised distrcomp yet)")
    silent = [node for node, r in reports.items() if r is None and node not in declined]
    if silent:
        lines.append(f"{node_list(silent)} did not report (busy where no Python runs, or a "
                     "program whose SIGUSR1 handler is not distrcomp's)")
    return lines


def _target(call: Mapping[str, Any]) -> int | None:
    """The one node a blocked recv or probe waits for, else None."""
    if call["op"] in ("recv", "probe") and call["peer"] >= 0:
        return call["peer"]
    return None


def _cycles(calls: Mapping[int, Mapping[str, Any]]) -> list[str]:
    lines = []
    seen: set[int] = set()
    for start in sorted(calls):
        path: list[int] = []
        node: int | None = start
        while node is not None and node in calls and node not in seen and node not in path:
            path.append(node)
            node = _target(calls[node])
        seen.update(path)
        if node is not None and node in path:
            cycle = path[path.index(node):]
            first = cycle.index(min(cycle))
            cycle = cycle[first:] + cycle[:first]
            hops = " -> ".join(f"node {n} {label(calls[n])}" for n in cycle)
            lines.append(f"deadlock: {hops} -> node {cycle[0]}")
    return lines


def _waits_on_finished(calls: Mapping[int, Mapping[str, Any]], finished: set[int],
                       n_node: int) -> list[str]:
    lines = []
    for node, call in sorted(calls.items()):
        if call["op"] == "exit":
            continue
        peer = call["peer"]
        if call["op"] in ("recv", "probe", "send") and peer >= 0 and peer in finished:
            lines.append(f"node {node} waits in {label(call)}, but node {peer} has finished")
        elif call["op"] in ("recv", "probe") and peer < 0 and n_node > 1 \
                and finished >= set(range(n_node)) - {node}:
            lines.append(f"node {node} waits in {label(call)}, but every other node has finished")
        elif call["op"] == "collective" and finished:
            lines.append(f"node {node} waits in {label(call)}, but {node_list(sorted(finished))} "
                         f"{'has' if len(finished) == 1 else 'have'} finished")
    return lines


def _sends_to_idle(calls: Mapping[int, Mapping[str, Any]], reports: Mapping[int, Report],
                   finished: set[int]) -> list[str]:
    lines = []
    for node, call in sorted(calls.items()):
        peer = call["peer"]
        if call["op"] != "send" or peer in finished or peer in calls:
            continue
        where = _innermost(reports.get(peer))
        doing = f": it runs {where}" if where else ""
        lines.append(f"node {node} waits in {label(call)} for node {peer} to take "
                     f"{_size(call.get('bytes', 0))}, but node {peer} is not in a distrcomp "
                     f"call{doing}")
    return lines


def _collectives(calls: Mapping[int, Mapping[str, Any]]) -> list[str]:
    groups: dict[str, list[int]] = {}
    for node, call in sorted(calls.items()):
        if call["op"] == "collective":
            groups.setdefault(label(call), []).append(node)
    if not groups:
        return []
    if len(groups) > 1:
        parts = ", ".join(f"{node_list(nodes)} in {what}" for what, nodes in groups.items())
        return [f"{parts}: collectives called in a different order"]
    (what, nodes), = groups.items()
    others = [(node, call) for node, call in sorted(calls.items())
              if call["op"] not in ("collective", "exit")]
    if not others:
        return []
    elsewhere = "; ".join(f"node {node} waits in {label(call)}" for node, call in others)
    return [f"{node_list(nodes)} in {what}, which the others have not called: {elsewhere}"]


def _held(reports: Mapping[int, Report]) -> list[str]:
    lines = []
    for node, report in sorted(reports.items()):
        if report is None:
            continue
        call = report.get("call")
        for src, tag, count in report.get("held", []):
            line = (f"node {node} holds {count} message{'s' if count != 1 else ''} from node "
                    f"{src} with tag {tag} that no recv has taken")
            if call and call["op"] in ("recv", "probe") and call["peer"] in (src, -1) \
                    and call["tag"] >= 0 and call["tag"] != tag:
                line += f"; node {node} waits for tag {call['tag']}"
            lines.append(line)
    return lines


def _innermost(report: Report) -> str:
    """The innermost ``File ..., line N, in f`` of a report's stack, or ``""``."""
    if not report:
        return ""
    frames = [line.strip() for line in report.get("stack", "").splitlines()
              if line.strip().startswith("File ")]
    return frames[-1] if frames else ""


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes} B"

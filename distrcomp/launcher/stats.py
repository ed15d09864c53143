"""``distrcomp run --stats``: the nodes' profiles (:func:`distrcomp.diag.profile_record`) as a
table per node and a node x node matrix of bytes, printed at the end of the job."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["table"]


def table(profiles: Mapping[int, Mapping[str, Any]], hosts: Sequence[str]) -> list[str]:
    """The lines of the profile: per node, messages and bytes sent and received and the share
    of its run time blocked in send, recv (and probe) and collectives; then the bytes each node
    sent to each (rows: from, columns: to). Bytes are what MPI moved: an object's frame (its
    pickle, or an array's small head) and its payloads. A node without a profile (it did not
    reach its end) has a row saying so."""
    n = len(hosts)
    head = ("node", "host", "sent msgs", "sent bytes", "recv msgs", "recv bytes", "run s",
            "send %", "recv %", "coll %")
    rows = []
    for node in range(n):
        p = profiles.get(node)
        if p is None:
            rows.append((str(node), hosts[node], "no profile (the node did not reach its end)"))
            continue
        run = max(p["run"], 1e-9)
        blocked = p["blocked"]
        rows.append((
            str(node), hosts[node], str(sum(p["msgs_to"])), str(sum(p["bytes_to"])),
            str(sum(p["msgs_from"])), str(sum(p["bytes_from"])), f"{p['run']:.3f}",
            f"{100 * blocked['send'] / run:.1f}",
            f"{100 * (blocked['recv'] + blocked['probe']) / run:.1f}",
            f"{100 * blocked['collective'] / run:.1f}",
        ))
    lines = ["distrcomp: communication profile (--stats)"] + _aligned([head, *rows])
    matrix = [("bytes", *(f"to {d}" for d in range(n)))]
    for node in range(n):
        p = profiles.get(node)
        sent = p["bytes_to"] if p is not None else ["?"] * n
        matrix.append((f"from {node}", *(str(b) for b in sent)))
    lines.append("bytes sent, from node (rows) to node (columns):")
    lines += _aligned(matrix)
    return lines


def _aligned(rows: Sequence[Sequence[str]]) -> list[str]:
    """Right-aligned columns (the host column left-aligned); a short row's last cell spills."""
    widths = [max(len(row[i]) for row in rows if len(row) > i and len(row) == len(rows[0]))
              for i in range(len(rows[0]))]
    out = []
    for row in rows:
        if len(row) != len(widths):
            out.append("  " + "  ".join(row))
            continue
        cells = [cell.ljust(w) if i == 1 and rows[0][1] == "host" else cell.rjust(w)
                 for i, (cell, w) in enumerate(zip(row, widths))]
        out.append("  " + "  ".join(cells).rstrip())
    return out

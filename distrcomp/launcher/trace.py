"""``distrcomp run --trace FILE``: the nodes' profile events as one Trace Event Format file.

The format is Chrome's (the JSON Object Format of "Trace Event Format", which Perfetto,
``chrome://tracing`` and viztracer's ``vizviewer`` read). Each node is one process named
``node N (host)`` with one track named ``node N``; their ``pid`` and ``tid`` are the node id
+ 1, because Perfetto takes pid 0 and tid 0 for the kernel's idle task (and then puts node 0's
slices on another node's track). Its slices (``ph: "X"``):

* ``send to N``: a message posted (its bytes and tag in ``args``); marked 1 microsecond long,
  the time taken to post one is not measured;
* ``arrive from N``: a message taken off the network (also 1 microsecond);
* ``recv``, ``probe``, ``send``, a collective's name, ``exit``: a time the node was blocked
  in that call (its node and tag in ``args``).

A flow arrow (``ph: "s"`` then ``"f"``, bound to the enclosing slices) joins each message's
``send`` to its ``arrive``: the k-th message node A sent to node B is the k-th that arrived at
B from A (MPI keeps the order of one sender's messages; distrcomp takes them in that order).
Its ``id`` is an integer, one per message: Perfetto's importer drops flows with other ids.
Times are the nodes' wall clocks, in microseconds from the earliest event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["trace_events", "write"]

_MARK_US = 1.0  # the length given to the send and arrive slices


def trace_events(profiles: Mapping[int, Mapping[str, Any]], hosts: Sequence[str]) -> dict[str, Any]:
    """The Trace Event Format object (``{"traceEvents": [...], ...}``) of the profiles."""
    starts = [p["wall"] + e[1] for p in profiles.values() for e in p["events"]]
    origin = min(starts) if starts else 0.0
    events: list[dict[str, Any]] = []
    flow_ids: dict[tuple[int, int, int], int] = {}  # (sender, receiver, seq) -> the flow's id
    for node, p in sorted(profiles.items()):
        track = {"pid": node + 1, "tid": node + 1}
        events.append({"name": "process_name", "ph": "M", **track,
                       "args": {"name": f"node {node} ({hosts[node]})"}})
        events.append({"name": "process_sort_index", "ph": "M", **track,
                       "args": {"sort_index": node}})
        events.append({"name": "thread_name", "ph": "M", **track,
                       "args": {"name": f"node {node}"}})
        for kind, t, peer, tag, amount, seq in p["events"]:
            ts = (p["wall"] + t - origin) * 1e6
            if kind in ("post", "arrive"):
                src, dest = (node, peer) if kind == "post" else (peer, node)
                name = f"send to {peer}" if kind == "post" else f"arrive from {peer}"
                events.append({"name": name, "cat": "message", "ph": "X", "ts": ts,
                               "dur": _MARK_US, **track,
                               "args": {"peer": peer, "tag": tag, "bytes": amount, "seq": seq}})
                flow_id = flow_ids.setdefault((src, dest, seq), len(flow_ids) + 1)
                flow = {"name": "message", "cat": "message", "id": flow_id,
                        **track, "ts": ts + _MARK_US / 2}
                flow.update({"ph": "s"} if kind == "post" else {"ph": "f", "bp": "e"})
                events.append(flow)
            else:
                events.append({"name": kind, "cat": "blocked", "ph": "X", "ts": ts,
                               "dur": amount * 1e6, **track,
                               "args": {"peer": peer, "tag": tag}})
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"producer": "distrcomp run --trace"}}


def write(path: str, profiles: Mapping[int, Mapping[str, Any]], hosts: Sequence[str]) -> None:
    """Write :func:`trace_events` to ``path``. Raises OSError if it cannot be written."""
    import json

    with open(path, "w", encoding="utf-8") as handle:
        json.dump(trace_events(profiles, hosts), handle)

"""The Trace Event Format's rules, as the tests of ``distrcomp run --trace`` check them."""

from __future__ import annotations


def check_trace_event_format(trace: dict) -> None:
    """The rules of the Trace Event Format (JSON Object Format) that this trace uses: a
    ``traceEvents`` list; every event has ``ph``, a positive ``pid`` and ``tid`` and (but
    metadata) a numeric ``ts`` in microseconds; complete events (``X``) a ``name`` and a
    ``dur`` >= 0; metadata (``M``) a known name and ``args``; flow events (``s``, ``f``) a
    ``name``, ``cat`` and an integer ``id``, each start with exactly one finish, the finish
    bound to its enclosing slice (``bp: "e"``) no earlier than the start, and each inside a
    complete event of its own track. (Positive ids and integer flow ids: what Perfetto's JSON
    importer needs to put each slice on its own process's track and to draw the flows.)"""
    assert isinstance(trace, dict) and isinstance(trace["traceEvents"], list)
    assert trace.get("displayTimeUnit", "ms") in ("ms", "ns")
    slices: dict[tuple, list[tuple[float, float]]] = {}
    flows: dict[str, dict[str, dict]] = {}
    for event in trace["traceEvents"]:
        assert event["ph"] in ("X", "M", "s", "f"), event
        # positive: Perfetto takes pid 0 and tid 0 for the kernel's idle task
        assert isinstance(event["pid"], int) and event["pid"] > 0, event
        assert isinstance(event["tid"], int) and event["tid"] > 0, event
        if event["ph"] == "M":
            assert event["name"] in ("process_name", "process_sort_index", "thread_name"), event
            assert isinstance(event["args"], dict)
            continue
        assert isinstance(event["ts"], (int, float)) and event["ts"] >= 0, event
        assert isinstance(event["name"], str) and event["name"], event
        if event["ph"] == "X":
            assert isinstance(event["dur"], (int, float)) and event["dur"] >= 0, event
            slices.setdefault((event["pid"], event["tid"]), []).append(
                (event["ts"], event["ts"] + event["dur"]))
        else:
            assert event["cat"], event
            # an integer: Perfetto's JSON importer drops a flow with any other id
            assert isinstance(event["id"], int) and event["id"] >= 0, event
            assert event["ph"] == "s" or event.get("bp") == "e", event
            assert event["ph"] not in flows.setdefault(event["id"], {}), event
            flows[event["id"]][event["ph"]] = event
    for flow in flows.values():
        assert set(flow) == {"s", "f"}, flow
        assert flow["f"]["ts"] >= flow["s"]["ts"] or flow["f"]["pid"] != flow["s"]["pid"], flow
        for event in flow.values():
            track = slices[(event["pid"], event["tid"])]
            assert any(a <= event["ts"] <= b for a, b in track), event

"""The launcher's reading of the nodes' reports (launcher/waitgraph.py, reports.py) and of their
profiles (stats.py, trace.py): plain values in, lines out."""

from __future__ import annotations

from traceformat import check_trace_event_format

from distrcomp.launcher import stats, trace
from distrcomp.launcher.reports import MARK, Reports, render
from distrcomp.launcher.waitgraph import findings, label, node_list


def recv(peer: int, tag: int = -1, seconds: float = 1.0) -> dict:
    return {"op": "recv", "peer": peer, "tag": tag, "for": seconds}


def report(node: int, call: dict | None, held=(), stack: str = "") -> dict:
    return {"node": node, "call": call, "held": [list(h) for h in held], "finished": [],
            "stack": stack}


def test_labels_and_node_lists():
    assert label(recv(1)) == "recv(from 1)"
    assert label(recv(-1, 8)) == "recv(from any, tag 8)"
    assert label({"op": "send", "peer": 2, "tag": 0, "for": 1}) == "send(to 2)"
    assert label({"op": "collective", "peer": -1, "tag": 0, "for": 1, "name": "barrier",
                  "seq": 4}) == "barrier #4"
    assert label({"op": "collective", "peer": 0, "tag": 0, "for": 1, "name": "bcast",
                  "seq": 7}) == "bcast(root=0) #7"
    assert node_list([3]) == "node 3"
    assert node_list([2, 0, 1, 5, 7, 8]) == "nodes 0-2, 5, 7-8"


def test_a_cycle_is_named_once_from_its_lowest_node():
    reports = {n: report(n, recv((n + 1) % 4)) for n in range(4)}
    assert findings(reports, {}, 4) == [
        "deadlock: node 0 recv(from 1) -> node 1 recv(from 2) -> node 2 recv(from 3) -> node 3 "
        + "recv(from 0) -> node 0"]
    # a node waiting on the cycle is not part of it
    reports = {0: report(0, recv(2)), 1: report(1, recv(2)), 2: report(2, recv(1))}
    assert findings(reports, {}, 3) == [
        "deadlock: node 1 recv(from 2) -> node 2 recv(from 1) -> node 1"]


def test_waits_on_finished_nodes():
    reports = {0: report(0, recv(1)), 2: report(2, recv(-1))}
    assert findings(reports, {1: "exit code 0", 3: "exit code 0"}, 4) == [
        "node 0 waits in recv(from 1), but node 1 has finished"]
    assert findings({0: report(0, recv(-1))}, {1: "exit code 0", 2: "lost"}, 3) == [
        "node 0 waits in recv(from any), but every other node has finished"]
    # a node in its exit handshake has finished too
    exiting = {"op": "exit", "peer": 0, "tag": 0, "for": 2.0}
    assert findings({0: report(0, recv(1)), 1: report(1, exiting)}, {}, 2) == [
        "node 0 waits in recv(from 1), but node 1 has finished"]


def test_a_send_to_a_node_that_computes():
    send = {"op": "send", "peer": 1, "tag": 0, "for": 3.0, "bytes": 64 << 20}
    stack = '  File "prog.py", line 9, in <module>\n    crunch()\n  File "prog.py", line 3, in crunch\n'
    assert findings({0: report(0, send), 1: report(1, None, stack=stack)}, {}, 2) == [
        ('node 0 waits in send(to 1) for node 1 to take 64 MiB, but node 1 is not in a distrcomp '
         'call: it runs File "prog.py", line 3, in crunch')]


def test_collectives_in_a_different_order_or_not_called_by_all():
    def coll(name, seq, root=-1):
        return {"op": "collective", "peer": root, "tag": 0, "for": 1.0, "name": name, "seq": seq}

    reports = {n: report(n, coll("barrier", 4)) for n in range(3)}
    reports[3] = report(3, coll("bcast", 4, root=0))
    assert findings(reports, {}, 4) == [
        "nodes 0-2 in barrier #4, node 3 in bcast(root=0) #4: collectives called in a different order"]
    reports[3] = report(3, recv(0))
    assert findings(reports, {}, 4) == [
        "nodes 0-2 in barrier #4, which the others have not called: node 3 waits in recv(from 0)"]


def test_held_messages_and_the_awaited_tag():
    reports = {0: report(0, recv(1)), 1: report(1, recv(0, 8), held=[(0, 7, 1)])}
    assert findings(reports, {}, 2) == [
        "deadlock: node 0 recv(from 1) -> node 1 recv(from 0, tag 8) -> node 0",
        "node 1 holds 1 message from node 0 with tag 7 that no recv has taken; node 1 waits for tag 8"]


def test_silent_nodes_are_named():
    assert findings({0: None, 1: report(1, None)}, {}, 2) == [
        ("node 0 did not report (busy where no Python runs, or a program whose SIGUSR1 handler "
         "is not distrcomp's)")]


def test_a_round_ends_once_every_node_answered_or_declined():
    reports = Reports()
    reports.ask([0, 1, 2])
    reports.decline(1)
    reports.decline(2)
    assert not reports.complete()
    reports.take(0, MARK + b'report {"node":0,"call":null,"held":[],"finished":[],"stack":""}\n')
    assert reports.complete()
    got, declined = reports.finish_round()
    assert got[1] is None and declined == {1, 2}
    found, details = render(got, {}, 4, declined)
    assert found == [("nodes 1-2: no process there handles SIGUSR1 (not a distrcomp program, or "
                      "one that has not initialised distrcomp yet)")]
    assert details[1] == details[2] == ["no process handles SIGUSR1"]
    # a node that ended meanwhile (nothing left to signal) is said to have ended, nothing more
    assert findings({1: None}, {1: "exit code 0"}, 2, {1}) == []
    reports.ask([1])  # a new round forgets who declined the last one
    assert not reports.complete()
    reports.decline(0)  # not asked in this round
    assert not reports.complete() and reports.finish_round() == ({1: None}, set())


def test_reports_are_taken_out_of_the_stream_and_rendered():
    reports = Reports()
    reports.ask([0, 1])
    line = MARK + b'report {"node":0,"call":{"op":"recv","peer":1,"tag":-1,"for":2.5},' \
        + b'"held":[[1,3,2]],"finished":[],"stack":"  File \\"p.py\\", line 2, in <module>\\n"}\n'
    assert reports.take(0, b"before\n" + line + b"after\n") == b"before\nafter\n"
    assert not reports.complete()
    assert reports.take(1, MARK + b"report {broken\n") == b""
    assert reports.errors and "node 1 wrote a malformed report line" in reports.errors[0]
    got, declined = reports.finish_round()
    found, details = render(got, {}, 2, declined)
    assert found == ["node 0 holds 2 messages from node 1 with tag 3 that no recv has taken",
                     ("node 1 did not report (busy where no Python runs, or a program whose "
                      "SIGUSR1 handler is not distrcomp's)")]
    assert details[0] == [
        "blocked in recv(from 1) for 2.5 s; holds 2 messages not yet received: 2 from node 1 (tag 3)",
        '  File "p.py", line 2, in <module>', "  in distrcomp: recv(from 1)"]
    assert details[1] == ["no report"]


def profile(node: int, events=()) -> dict:
    return {"node": node, "run": 2.0, "msgs_to": [0, 3] if node == 0 else [1, 0],
            "bytes_to": [0, 24040] if node == 0 else [5, 0],
            "msgs_from": [0, 1] if node == 0 else [3, 0], "bytes_from": [0, 5] if node == 0 else [24040, 0],
            "blocked": {"send": 0.0, "recv": 0.5, "probe": 0.0, "collective": 0.25, "exit": 0.1},
            "wall": 1000.0, "events": list(events)}


def test_stats_table_and_matrix():
    lines = stats.table({0: profile(0), 1: profile(1)}, ["a", "b", "c"])
    assert lines[0] == "distrcomp: communication profile (--stats)"
    assert lines[1].split() == ["node", "host", "sent", "msgs", "sent", "bytes", "recv", "msgs",
                                "recv", "bytes", "run", "s", "send", "%", "recv", "%", "coll", "%"]
    assert lines[2].split() == ["0", "a", "3", "24040", "1", "5", "2.000", "0.0", "25.0", "12.5"]
    assert lines[4].split() == ["2", "c", "no", "profile", "(the", "node", "did", "not", "reach",
                                "its", "end)"]
    at = lines.index("bytes sent, from node (rows) to node (columns):")
    assert [line.split() for line in lines[at + 1:]] == [
        ["bytes", "to", "0", "to", "1", "to", "2"], ["from", "0", "0", "24040"],
        ["from", "1", "5", "0"], ["from", "2", "?", "?", "?"]]


def test_trace_joins_each_send_to_its_arrival():
    p0 = profile(0, [("post", 10.0, 1, 0, 8040, 1), ("recv", 10.1, 1, -1, 0.2, 0)])
    p1 = profile(1, [("recv", 9.9, 0, -1, 0.15, 0), ("arrive", 10.05, 0, 0, 8040, 1),
                     ("post", 10.2, 0, 0, 5, 1), ("barrier", 10.3, -1, 0, 0.01, 0)])
    p0["events"].append(("arrive", 10.299, 1, 0, 5, 1))
    got = trace.trace_events({0: p0, 1: p1}, ["a", "b"])
    check_trace_event_format(got)
    flows = [e for e in got["traceEvents"] if e["ph"] in "sf"]
    # node N is pid N + 1; each message one integer id, on its send (s) and its arrival (f)
    ends = {(e["ph"], e["pid"]): e["id"] for e in flows}
    assert len(flows) == 4 and len(ends) == 4
    assert ends[("s", 1)] == ends[("f", 2)] != ends[("s", 2)] == ends[("f", 1)]
    x = {(e["pid"] - 1, e["name"]): e for e in got["traceEvents"] if e["ph"] == "X"}
    assert all(e["tid"] == e["pid"] for e in got["traceEvents"])
    assert x[(1, "recv")]["ts"] == 0.0 and abs(x[(1, "recv")]["dur"] - 150000) < 1e-6
    assert x[(0, "send to 1")]["args"] == {"peer": 1, "tag": 0, "bytes": 8040, "seq": 1}
    assert (1, "barrier") in x

"""Why a job is stuck (issue 27), as the launcher says it under real mpiexec: the wait-for
graph's findings at --timeout and on SIGUSR1, each node's details, a recv from a finished
node that raises, and the --stats / --trace profile of known traffic."""

from __future__ import annotations

import json
import re
import signal
import sys
import time

import pytest
from jobtools import launch, program, start, wait_for_files
from traceformat import check_trace_event_format

NO_HANDLER = ("{}: no process there handles SIGUSR1 (not a distrcomp program, or one that has "
              "not initialised distrcomp yet)")
BOUND = 60  # generous: the launcher's end after the time limit, on a loaded machine


def stuck(tmp_path, n: int, scenario: str, limit: float = 3):
    """``distrcomp run -n N --timeout LIMIT stuck.py DIR SCENARIO``, which must time out."""
    done = launch(tmp_path, "run", "-n", str(n), "--timeout", str(limit), program("stuck.py"),
                  str(tmp_path), scenario, timeout=limit + BOUND)
    assert done.returncode == 124, done
    return done


def findings(stderr: str) -> list[str]:
    """The launcher's lines between its request for reports and the first node's details."""
    lines = stderr.splitlines()
    first = next(i for i, line in enumerate(lines) if "asking every running node where it is" in line)
    out = []
    for line in lines[first + 1:]:
        if line.startswith("[node "):
            break
        out.append(line)
    return out


def test_two_node_recv_recv_cycle(tmp_path):
    done = stuck(tmp_path, 2, "ring")
    assert findings(done.stderr) == ["deadlock: node 0 recv(from 1) -> node 1 recv(from 0) -> node 0"], done
    for node, peer in ((0, 1), (1, 0)):
        tag = f"[node {node} \u00b7 localhost]"
        assert re.search(rf"{re.escape(tag)} blocked in recv\(from {peer}\) for \d+\.\d s", done.stderr), done
        # the stack ends at the program's line, then the distrcomp call (compiled: no frame)
        assert re.search(rf'{re.escape(tag)}   File ".*stuck\.py", line \d+, in <module>\n'
                         rf"{re.escape(tag)}     dc\.recv\(\(me \+ 1\) % n\)\n"
                         rf"{re.escape(tag)}   in distrcomp: recv\(from {peer}\)", done.stderr)
    assert "nodes still running then: 0, 1" in done.stderr


def test_four_node_ring_of_recvs(tmp_path):
    done = stuck(tmp_path, 4, "ring", limit=5)
    assert findings(done.stderr) == [
        "deadlock: node 0 recv(from 1) -> node 1 recv(from 2) -> node 2 recv(from 3) -> node 3 "
        + "recv(from 0) -> node 0"], done


def test_wait_for_a_finished_node(tmp_path):
    # node 1 ends without its exit handshake (os._exit): only the launcher knows it ended
    done = stuck(tmp_path, 2, "finished")
    assert findings(done.stderr) == ["node 0 waits in recv(from 1), but node 1 has finished"], done


def test_tag_mismatch_names_the_held_message(tmp_path):
    done = stuck(tmp_path, 2, "tag")
    assert findings(done.stderr) == [
        "deadlock: node 0 recv(from 1) -> node 1 recv(from 0, tag 8) -> node 0",
        "node 1 holds 1 message from node 0 with tag 7 that no recv has taken; node 1 waits for tag 8",
    ], done
    assert "[node 1 \u00b7 localhost] blocked in recv(from 0, tag 8)" in done.stderr


def test_collectives_in_a_different_order(tmp_path):
    done = stuck(tmp_path, 4, "order", limit=5)
    assert findings(done.stderr) == [
        "nodes 0-2 in barrier #1, node 3 in bcast(root=0) #1: collectives called in a different order",
    ], done


def test_send_waiting_on_a_node_that_computes(tmp_path):
    done = stuck(tmp_path, 2, "compute")
    found = findings(done.stderr)
    assert len(found) == 1, done
    assert re.fullmatch(r'node 0 waits in send\(to 1\) for node 1 to take 64 MiB, but node 1 is not '
                        r'in a distrcomp call: it runs File ".*stuck\.py", line \d+, in <module>',
                        found[0]), done
    assert "[node 1 \u00b7 localhost] not in a distrcomp call" in done.stderr
    assert "time.sleep(600)  # stands for a long computation" in done.stderr


@pytest.mark.parametrize("command", [["sleep", "60"], [sys.executable, "-c", "import time; time.sleep(60)"]],
                         ids=["sleep", "python-without-distrcomp"])
def test_nodes_where_no_process_handles_sigusr1_are_named_by_their_wrappers(tmp_path, command):
    # the wrappers answer the report order themselves: before, the launcher waited its 5 s
    # for reports that never come and then said only that the nodes did not report
    done = launch(tmp_path, "run", "-n", "2", "--timeout", "3", "--", *command,
                  timeout=3 + BOUND)
    assert done.returncode == 124, done
    assert findings(done.stderr) == [NO_HANDLER.format("nodes 0-1")], done
    for node in range(2):
        assert f"[node {node} \u00b7 localhost] no process handles SIGUSR1" in done.stderr, done


def test_sigusr1_reports_without_stopping(tmp_path):
    job = start(tmp_path, "run", "-n", "2", program("stuck.py"), str(tmp_path), "ring")
    wait_for_files([tmp_path / f"ready-{node}" for node in range(2)])
    time.sleep(2)  # from the ready file to the blocked recv
    job.proc.send_signal(signal.SIGUSR1)
    job.read_stderr_until("[node 1 \u00b7 localhost]   in distrcomp: recv(from 0)", timeout=BOUND)
    assert job.proc.poll() is None, "SIGUSR1 stopped the job"
    job.proc.send_signal(signal.SIGTERM)
    done = job.wait(timeout=BOUND)
    assert done.returncode == 128 + signal.SIGTERM, done
    assert "distrcomp: SIGUSR1 received; asking every running node where it is" in done.stderr
    assert findings(done.stderr) == ["deadlock: node 0 recv(from 1) -> node 1 recv(from 0) -> node 0"], done


@pytest.mark.parametrize("n", [2, 4])
def test_recv_from_a_finished_node_raises(tmp_path, n):
    done = launch(tmp_path, "run", "-n", str(n), program("stuck.py"), str(tmp_path), "from_finished",
                  timeout=BOUND)
    assert done.returncode != 0, done
    assert "[node 0 \u00b7 localhost] got only one" in done.stdout, done
    assert ("DistrCompError: recv: node 0 waits for a message from node 1 with any tag, but node 1 "
            "has finished and sent no such message") in done.stderr, done


def test_recv_from_any_node_when_all_others_finished_raises(tmp_path):
    done = launch(tmp_path, "run", "-n", "3", program("stuck.py"), str(tmp_path), "any_finished",
                  timeout=BOUND)
    assert done.returncode != 0, done
    assert ("DistrCompError: recv: node 0 waits for a message from any node with any tag, but every "
            "other node has finished and sent no such message") in done.stderr, done


@pytest.mark.parametrize("n", [2, 3])
def test_a_collective_that_a_finished_node_never_calls_raises(tmp_path, n):
    # node 1's exit handshake (a reduce-scatter on the same communicator) matched the others'
    # bcast and barrier, which returned as if every node had called them; the job then hung
    done = launch(tmp_path, "run", "-n", str(n), program("stuck.py"), str(tmp_path),
                  "collective_finished", timeout=BOUND)
    assert done.returncode == 1, done
    assert "passed the barrier" not in done.stdout, done
    assert re.search(r"DistrCompError: (bcast #2|barrier #3): node 0 waits for every node to call "
                     r"it, but node 1 has finished after calling 1 collective\(s\)", done.stderr), done


def stats_rows(stderr: str) -> tuple[dict[int, list[str]], dict[int, list[int]]]:
    """The --stats table's rows and the byte matrix's, by node."""
    lines = stderr.splitlines()
    at = lines.index("distrcomp: communication profile (--stats)")
    rows, matrix = {}, {}
    for line in lines[at + 2:]:
        cells = line.split()
        if cells and cells[0].isdigit():
            rows[int(cells[0])] = cells
        elif cells[:1] == ["from"]:
            matrix[int(cells[1])] = [int(c) for c in cells[2:]]
        elif matrix and (line.startswith("Total time") or not line.startswith(" ")):
            break
    return rows, matrix


def test_stats_match_the_messages_sent(tmp_path):
    done = launch(tmp_path, "run", "-n", "2", "--stats", program("traffic.py"), timeout=BOUND)
    assert done.returncode == 0, done
    rows, matrix = stats_rows(done.stderr)
    # node, host, sent msgs, sent bytes, recv msgs, recv bytes, run s, send %, recv %, coll %
    assert [rows[0][2], rows[0][4]] == ["3", "1"], done
    assert [rows[1][2], rows[1][4]] == ["1", "3"], done
    data = 3 * 8000  # three arrays of 1000 float64; the first also carries its small head
    assert data <= matrix[0][1] < data + 256, done
    assert 0 < matrix[1][0] < 64, done  # one pickled int
    assert matrix[0][0] == matrix[1][1] == 0
    assert int(rows[0][3]) == matrix[0][1] and int(rows[1][5]) == matrix[0][1], done
    assert int(rows[1][3]) == matrix[1][0] == int(rows[0][5]), done
    for row in rows.values():
        assert all(0 <= float(share) <= 100 for share in row[7:10]), done


def test_trace_is_trace_event_format(tmp_path):
    path = tmp_path / "trace.json"
    done = launch(tmp_path, "run", "-n", "2", "--trace", str(path), program("traffic.py"), timeout=BOUND)
    assert done.returncode == 0, done
    assert f"distrcomp: trace of 2 of 2 nodes written to {path}" in done.stderr, done
    trace = json.loads(path.read_text())
    check_trace_event_format(trace)
    events = trace["traceEvents"]
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert names == {"node 0 (localhost)", "node 1 (localhost)"}
    sends = [e for e in events if e["ph"] == "X" and e["name"].startswith("send to")]
    arrivals = [e for e in events if e["ph"] == "X" and e["name"].startswith("arrive from")]
    # node N is pid N + 1
    assert sorted((e["pid"], e["name"]) for e in sends) == [(1, "send to 1")] * 3 + [(2, "send to 0")]
    assert len(arrivals) == 4
    sent = sorted(e["args"]["bytes"] for e in sends if e["pid"] == 1)
    assert sent[:2] == [8000, 8000] and 8000 < sent[2] < 8000 + 256  # the first with its head
    assert {e["args"]["tag"] for e in sends} == {0}

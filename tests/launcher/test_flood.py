"""A flood of connections to the relay listener while the nodes start: idle ones, garbage,
slow ones. The real nodes still get in, the job is not held up, and the summary blames nobody.

To make sure the flood is there before the nodes connect, the test stops mpiexec (SIGSTOP to
its process group) as soon as it appears, floods the listener the launcher has already opened,
and only then lets mpiexec start the nodes.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
from jobtools import processes_with_mark, start, tagged_lines

FLOOD = 1000  # connections: a third idle, a third garbage, a third slow
TIMEOUT = 120


def _stopped_mpiexec(launcher: int) -> tuple[int, str]:
    """Stop ``launcher``'s mpiexec (SIGSTOP to its process group) as soon as it is there; its
    pid and the relay address in its environment."""
    deadline = time.monotonic() + TIMEOUT
    children = Path(f"/proc/{launcher}/task/{launcher}/children")
    while time.monotonic() < deadline:
        for pid in children.read_text().split():
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            address = [entry for entry in environ if entry.startswith(b"DISTRCOMP_RELAY=")]
            if address:  # mpiexec, past its exec (the scratch janitor has no address)
                os.killpg(int(pid), signal.SIGSTOP)
                return int(pid), address[0].split(b"=", 1)[1].decode()
        time.sleep(0.0002)
    pytest.fail("the launcher never started mpiexec")


def _nodes_started(mark: str, witnesses: Path) -> bool:
    """Whether a node's wrapper (``python -S -c ...``) of the job marked ``mark`` exists, or a
    node's program has left its file in ``witnesses`` (a job that ran to its end before mpiexec
    was stopped: its wrappers are gone, and so is the listener)."""
    if any(witnesses.iterdir()):
        return True
    for pid in processes_with_mark(mark):
        try:
            cmdline = Path(f"/proc/{pid.split()[0]}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline[1:3] == [b"-S", b"-c"]:
            return True
    return False


def _flood(host: str, port: int) -> list[socket.socket]:
    socks = []
    for i in range(FLOOD):
        sock = socket.create_connection((host, port), timeout=TIMEOUT)
        kind = i % 3
        if kind == 1:
            sock.sendall(os.urandom(200))  # garbage: more than a handshake may hold
        elif kind == 2:
            sock.sendall(b"\0\0")  # slow: a handshake begun, never finished
        socks.append(sock)
    return socks


def test_a_flood_of_connections_during_start_up_locks_no_node_out(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < FLOOD + 200:
        if hard != resource.RLIM_INFINITY and hard < FLOOD + 200:
            pytest.skip(f"needs {FLOOD + 200} open files, the limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (FLOOD + 200, hard))
    # a temporary directory too deep for a Unix socket's name: the launcher listens on TCP
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    for attempt in range(5):
        witnesses = tmp_path / f"started-{attempt}"
        witnesses.mkdir()
        code = (f"import os; open(os.path.join({str(witnesses)!r}, str(os.getpid())), 'w').close(); "
                "import distrcomp as dc; dc.barrier(); print('node', dc.node_id, 'in')")
        job = start(tmp_path, "run", "-n", "2", "--", sys.executable, "-c", code,
                    env={"TMPDIR": str(deep)})
        mpiexec, address = _stopped_mpiexec(job.proc.pid)
        if not _nodes_started(job.mark, witnesses):
            break
        os.killpg(mpiexec, signal.SIGCONT)  # stopped too late: a node may have connected
        job.wait(timeout=TIMEOUT)
    else:
        pytest.fail("mpiexec could never be stopped before it started a node")
    socks: list[socket.socket] = []
    try:
        try:
            host, port = address.rsplit(":", 1)
            socks = _flood(host, int(port))
        finally:
            os.killpg(mpiexec, signal.SIGCONT)
        done = job.wait(timeout=TIMEOUT)
    finally:
        for sock in socks:
            sock.close()
    assert done.returncode == 0, done
    assert sorted(text for _, _, text in tagged_lines(done.stdout)) == ["node 0 in", "node 1 in"]
    assert "never started" not in done.stderr, done
    assert "connect back" not in done.stderr, done  # no blame on the launcher's address

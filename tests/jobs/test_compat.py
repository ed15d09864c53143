"""The legacy ``message`` module under real mpiexec, found through PYTHONPATH as documented."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import mpiexec_argv

from distrcomp.launcher.script import compat_dir

ROOT = Path(__file__).resolve().parents[2]
COMPAT_ENV = {"PYTHONPATH": compat_dir()}
TIMEOUT = 300  # generous: 4 ranks share 2 cores; a hang still ends the test


def legacy_job(job, tmp_path: Path, n: int, text: str, **env: str) -> subprocess.CompletedProcess:
    path = tmp_path / "legacy.py"
    path.write_text(textwrap.dedent(text))
    return job(n, path, timeout=TIMEOUT, env={**COMPAT_ENV, **env})


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def said(pattern: str, out: str) -> list[str]:
    """Every match of ``pattern`` in ``out``, sorted. Lines, not: mpiexec may interleave the
    nodes' output mid-line (print writes text and newline separately when unbuffered)."""
    return sorted(re.findall(pattern, out))


# ------------------------------------------------------------------------------ the ring
RING = """
    import sys
    import numpy as np
    import message as ms

    SIZE = 64 * 2**20
    ms.setup_connection()
    myID, nodes = ms.node_id, ms.n_node
    kind = sys.argv[1]
    if kind == "small":
        data = "Next to %i is %i" % (myID, (myID + 1) % nodes)
    elif kind == "array":
        data = np.full(SIZE // 8, myID, dtype=np.float64)
    else:
        data = "%i:" % myID + "x" * SIZE
    ms.send((myID + 1) % nodes, data)
    got = ms.recv((myID - 1 + nodes) % nodes)
    left = (myID - 1 + nodes) % nodes
    if kind == "small":
        assert got == "Next to %i is %i" % (left, myID), got
    elif kind == "array":
        assert got.shape == (SIZE // 8,) and got.dtype == np.float64 and (got == left).all()
    else:
        assert got.startswith("%i:x" % left) and len(got) == len("%i:" % left) + SIZE
    print("node %i ok" % myID)
    ms.close_connection()
"""


@pytest.mark.parametrize("kind", ["small", "array", "string"])
@pytest.mark.parametrize("n", [2, 4])
def test_legacy_ring(job, tmp_path: Path, n: int, kind: str) -> None:
    path = tmp_path / "ring.py"
    path.write_text(textwrap.dedent(RING))
    out = ok(job(n, [sys.executable, str(path), kind], timeout=TIMEOUT, env=COMPAT_ENV))
    assert said(r"node \d+ ok", out) == [f"node {k} ok" for k in range(n)]


def test_documented_one_liner_with_plain_mpiexec(tmp_path: Path) -> None:
    """``PYTHONPATH=$(...compat path...) mpiexec -n 4 python legacy.py`` in a shell."""
    # Until the CLI's ``distrcomp compat-path`` lands, the same path printed by Python.
    compat = f"{sys.executable} -c 'from distrcomp.launcher.script import compat_dir; print(compat_dir())'"
    mpiexec = " ".join(mpiexec_argv(4))
    line = f"PYTHONPATH=$({compat}) {mpiexec} {sys.executable} examples/legacy_ring.py"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        ["bash", "-c", line], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=TIMEOUT, check=False,
    )
    assert said(r"Next to \d+ is \d+", ok(done)) == [f"Next to {k} is {(k + 1) % 4}" for k in range(4)]


def test_without_the_compat_path_message_is_not_found(job) -> None:
    env = {"PYTHONPATH": ""}
    done = job(2, ROOT / "examples" / "legacy_ring.py", timeout=TIMEOUT, env=env)
    assert done.returncode != 0
    assert "No module named 'message'" in done.stderr


# ----------------------------------------------------------------- attributes, setup, close
def test_attributes_before_and_after_setup(job, tmp_path: Path) -> None:
    done = legacy_job(job, tmp_path, 2, """
        import message as ms
        before = (ms.node_id, ms.n_node)          # readable right after import
        ms.setup_connection()
        ms.setup_connection()                     # idempotent
        after = (ms.node_id, ms.n_node)
        from message import *                     # noqa: F403 - old scripts do this
        assert before == after == (node_id, n_node), (before, after)
        print("node %i of %i" % after)
    """)
    assert said(r"node \d+ of \d+", ok(done)) == ["node 0 of 2", "node 1 of 2"]


CLOSE = {
    "twice": "ring()\nms.close_connection()\nms.close_connection()\n",
    "never": "ring()\n",
    "early": "ms.close_connection()\nring()\n",  # send and recv keep working after it
    "some": "ring()\nif ms.node_id == 0:\n    ms.close_connection()\n    ms.close_connection()\n",
    "again": "ms.close_connection()\nms.setup_connection()\nring()\nms.close_connection()\n",
}


@pytest.mark.parametrize("how", sorted(CLOSE))
@pytest.mark.parametrize("n", [2, 4])
def test_close_connection_twice_never_or_early(job, tmp_path: Path, n: int, how: str) -> None:
    head = """
        import message as ms
        ms.setup_connection()

        def ring():
            me, n = ms.node_id, ms.n_node
            ms.send((me + 1) % n, me)
            assert ms.recv((me - 1) % n) == (me - 1) % n
            print("node %i ok" % me)

    """
    done = legacy_job(job, tmp_path, n, textwrap.dedent(head) + CLOSE[how])
    assert said(r"node \d+ ok", ok(done)) == [f"node {k} ok" for k in range(n)]
    assert "warning" not in done.stderr


# -------------------------------------------------------------------------- send to self
def test_send_and_recv_to_self_raise(job, tmp_path: Path) -> None:
    done = legacy_job(job, tmp_path, 2, """
        import message as ms
        ms.setup_connection()
        me = ms.node_id
        for call in (lambda: ms.send(me, "x"), lambda: ms.recv(me)):
            try:
                call()
            except ms.SelfMessageError as error:
                assert isinstance(error, ValueError) and error.node == me
                print(error)
            else:
                raise SystemExit("no error on node %i" % me)
        try:
            ms.send(me / 1, "x")   # a node id computed with / (Python 2 habits)
        except TypeError as error:
            print(error)
        # nothing was sent or lost: the nodes still talk
        ms.send(1 - me, "after")
        assert ms.recv(1 - me) == "after"
        print("node %i still fine" % me)
    """)
    out = ok(done)
    for k in (0, 1):
        assert f"send: node {k} cannot send a message to itself (idx={k})" in out
        assert f"recv: node {k} cannot receive from itself (idx={k})" in out
        assert f"send: idx must be an int node id, got float ({float(k)!r}); in Python 3, / gives a float" in out
        assert f"node {k} still fine" in out
    assert "never received" not in done.stderr


@pytest.mark.parametrize("n", [1, 2])
def test_uncaught_send_to_self_ends_the_job(job, tmp_path: Path, n: int) -> None:
    done = legacy_job(job, tmp_path, n, """
        import message as ms
        ms.setup_connection()
        if ms.node_id == 0:
            ms.send(0, "to myself")
        ms.recv(0)   # the others wait for node 0, which died: the job must still end
    """)
    assert done.returncode != 0
    assert "SelfMessageError: send: node 0 cannot send a message to itself (idx=0)" in done.stderr


def test_legacy_ring_on_one_node_says_why_it_fails(job) -> None:
    done = job(1, ROOT / "examples" / "legacy_ring.py", timeout=TIMEOUT, env=COMPAT_ENV)
    assert done.returncode != 0
    assert "send: node 0 cannot send a message to itself (idx=0)" in done.stderr


# ------------------------------------------------------------------------------- recv(-1)
@pytest.mark.parametrize("n", [2, 4])
def test_recv_minus_one_returns_the_sender_without_consuming(job, tmp_path: Path, n: int) -> None:
    done = legacy_job(job, tmp_path, n, """
        import time
        import numpy as np
        import message as ms

        ms.setup_connection()
        me, n = ms.node_id, ms.n_node
        if me == 0:
            seen = []
            for _ in range(n - 1):
                src = ms.recv(-1)                 # blocks: the senders start late
                assert 1 <= src < n, src
                assert ms.recv(-1) == src         # not consumed: the same answer again
                assert ms.recv(-7) == src         # any negative id is the same question
                data = ms.recv(src)
                assert data[0] == src and (data[1] == src).all() and data[1].size == 2**22
                seen.append(src)
            assert sorted(seen) == list(range(1, n)), seen
            print("recv(-1) saw", sorted(seen))
        else:
            time.sleep(0.3)
            ms.send(0, (me, np.full(2**22, me)))   # 32 MiB: a large message waits unconsumed
    """)
    assert ok(done).strip() == f"recv(-1) saw {list(range(1, n))}"
    assert "never received" not in done.stderr


@pytest.mark.parametrize("n", [3, 4])
def test_recv_minus_one_mixed_with_normal_recvs(job, tmp_path: Path, n: int) -> None:
    done = legacy_job(job, tmp_path, n, """
        import message as ms

        ms.setup_connection()
        me = ms.node_id
        if me == 0:
            assert ms.recv(-1) == 1               # node 2 only sends after our "go"
            ms.send(2, "go")
            assert ms.recv(2) == "a2"             # a normal recv of another node meanwhile
            assert ms.recv(-1) == 1               # node 1's first message is still the first
            assert ms.recv(1) == "a1"             # ...and recv(1) returns it, in order
            assert ms.recv(1) == "b1"
            assert ms.recv(-1) == 2               # node 1 has nothing left: node 2's turn
            assert ms.recv(2) == "b2"
            print("mixed ok")
        elif me == 1:
            ms.send(0, "a1")
            ms.send(0, "b1")
        elif me == 2:
            assert ms.recv(0) == "go"
            ms.send(0, "a2")
            ms.send(0, "b2")
    """)
    assert ok(done).strip() == "mixed ok"
    assert "never received" not in done.stderr


@pytest.mark.parametrize("n", [2, 4])
def test_all_to_all_sends_first_then_recv_minus_one(job, tmp_path: Path, n: int) -> None:
    done = legacy_job(job, tmp_path, n, """
        import numpy as np
        import message as ms

        ms.setup_connection()
        me, n = ms.node_id, ms.n_node
        for other in range(n):                    # everybody sends 16 MiB to everybody first
            if other != me:
                ms.send(other, (me, np.full(2**21, me * 100 + other, dtype=np.int64)))
        got = []
        while len(got) < n - 1:
            src = ms.recv(-1)
            who, data = ms.recv(src)
            assert who == src and src not in got and (data == src * 100 + me).all(), src
            got.append(src)
        print("node %i got %s" % (me, sorted(got)))
    """)
    out = ok(done)
    for k in range(n):
        assert f"node {k} got {[j for j in range(n) if j != k]}" in out
    assert "never received" not in done.stderr


# ------------------------------------------------------------- the chain nobody finishes
@pytest.mark.parametrize("size", ["small", "64MiB"])
@pytest.mark.parametrize("n", [2, 4])
def test_chain_whose_last_message_is_never_received_ends_cleanly(
    job, tmp_path: Path, n: int, size: str
) -> None:
    done = legacy_job(job, tmp_path, n, f"""
        import numpy as np
        import message as ms

        ms.setup_connection()
        me, n = ms.node_id, ms.n_node
        if me == 0:
            ms.send(1, np.arange({2**23 if size == "64MiB" else 10}, dtype=np.float64))
        else:
            data = ms.recv(me - 1)
            ms.send((me + 1) % n, data)           # the last one goes to node 0: never received
        print("node %i done" % me)
        ms.close_connection()
    """)
    assert said(r"node \d+ done", ok(done)) == [f"node {k} done" for k in range(n)]
    # The message did arrive at node 0, which reports it instead of hanging or losing it quietly.
    assert f"node 0 is exiting with 1 message(s) never received: 1 from node {n - 1}" in done.stderr

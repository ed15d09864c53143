"""send / recv / recv_any / probe and the collectives from several threads of each node, run by
test_mpi_suite.py at 1, 2 and 4 ranks with each build of the engine.

Every thread of every node sends to every node (itself too) with a tag of its own: small arrays
of one dtype and shape (the REPEAT path), arrays of other shapes, dicts, and large arrays (whose
send waits for MPI), and receives what the same-numbered thread of every node sent it. Each
message must arrive exactly once, in the order its thread sent it.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

T = 120.0
THREADS = 4
COUNT = 300  # messages from each thread to each node
TAG = 40  # thread k sends with tag TAG + k


def _message(node: int, thread: int, seq: int):
    if seq % 50 == 49:
        return np.full(40_000, seq, np.int64)  # 320 kB: sent from the caller's memory, waited for
    if seq % 7 == 3:
        return {"from": (node, thread), "seq": seq}
    if seq % 11 == 5:
        return np.array([node, thread, seq, 0, 0], np.int64)  # another shape: its head is sent
    return np.array([node, thread, seq], np.int64)


def _check(got, node: int, thread: int, seq: int) -> None:
    want = _message(node, thread, seq)
    if isinstance(want, dict):
        assert got == want, (node, thread, seq, got)
    else:
        assert got.dtype == want.dtype and np.array_equal(got, want), (node, thread, seq, got[:5])


def _run_threads(target, count: int = THREADS) -> None:
    """Run ``target(k)`` in ``count`` threads; re-raise the first failure here."""
    failures: list[BaseException] = []

    def run(k: int) -> None:
        try:
            target(k)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(k,), name=f"worker-{k}") for k in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(4 * T)
    assert not any(thread.is_alive() for thread in threads), "a thread is still running"
    if failures:
        raise failures[0]


@pytest.mark.mpi
def test_sender_threads_and_receiver_threads_every_message_once_in_order(dc):
    # Two threads only send (never waiting for a receiver: sends pile up in the engine) and
    # two only receive, each from every node, the messages of one sender thread.
    me, n = dc.node_id, dc.n_node
    count = 2000

    def worker(k: int) -> None:
        if k < 2:
            for seq in range(count):
                for dest in range(n):
                    dc.send(dest, _message(me, k, seq), TAG + k)
            return
        sender = k - 2
        nxt = [0] * n
        for _ in range(count * n):
            if k == 2:
                src, got = dc.recv_any(TAG + sender, timeout=T)
            else:
                src, _ = dc.probe(dc.ANY_SOURCE, TAG + sender, timeout=T)
                got = dc.recv(src, TAG + sender)
            _check(got, src, sender, nxt[src])
            nxt[src] += 1
        assert nxt == [count] * n

    _run_threads(worker)
    _nothing_left(dc, range(2))


@pytest.mark.mpi
def test_threads_that_send_and_receive_every_message_once_in_order(dc):
    me, n = dc.node_id, dc.n_node

    def worker(k: int) -> None:
        tag = TAG + k
        nxt = [0] * n
        for seq in range(COUNT):
            for dest in range(n):
                dc.send(dest, _message(me, k, seq), tag)
            # receive what has come so far, in a different way per thread
            for src in range(n):
                while nxt[src] <= seq:
                    if k == 1:  # any node, then check who
                        got_src, got = dc.recv_any(tag, timeout=T)
                    elif k == 2:  # probe first
                        got_src, got_tag = dc.probe(src, tag, timeout=T)
                        assert got_tag == tag
                        got = dc.recv(src, tag, timeout=T)
                    else:
                        got_src, got = src, dc.recv(src, tag, **({"timeout": T} if k else {}))
                    _check(got, got_src, k, nxt[got_src])
                    nxt[got_src] += 1
        assert nxt == [COUNT] * n

    _run_threads(worker)
    _nothing_left(dc, range(THREADS))


def _nothing_left(dc, threads) -> None:
    """No message with the tag of any of ``threads`` is left (none arrived twice)."""
    dc.barrier()
    for k in threads:
        with pytest.raises(TimeoutError):
            dc.recv(dc.ANY_SOURCE, TAG + k, timeout=0)


@pytest.mark.mpi
def test_a_collective_in_one_thread_while_others_send_and_receive(dc):
    me, n = dc.node_id, dc.n_node
    right, left = (me + 1) % n, (me - 1) % n
    sums = []

    def worker(k: int) -> None:
        if k == 0:  # the only thread of each node calling collectives: same order everywhere
            for step in range(20):
                sums.append(dc.allreduce(np.full(1000, step + me, np.float64)))
                dc.barrier()
            return
        for seq in range(COUNT):
            dc.send(right, _message(me, k, seq), TAG + k)
            _check(dc.recv(left, TAG + k, timeout=T), left, k, seq)

    _run_threads(worker)
    assert [s[0] for s in sums] == [n * step + n * (n - 1) / 2 for step in range(20)]


@pytest.mark.mpi
def test_a_thread_blocked_in_recv_does_not_stop_the_others(dc):
    # The main thread waits (no timeout) for a message that one of its own threads sends only
    # after a whole exchange with the other nodes: that needs the other threads to progress.
    me, n = dc.node_id, dc.n_node
    right, left = (me + 1) % n, (me - 1) % n

    def exchange() -> None:
        outcome = "failed"
        try:
            for seq in range(COUNT):
                dc.send(right, _message(me, 0, seq), TAG)
                _check(dc.recv(left, TAG, timeout=T), left, 0, seq)
            outcome = "done"
        finally:
            dc.send(me, outcome, TAG + 9)

    thread = threading.Thread(target=exchange)
    thread.start()
    assert dc.recv(me, TAG + 9) == "done"
    thread.join(T)
    assert not thread.is_alive()

"""An array with the dtype and shape of the last array head sent to its node goes as its data
alone (``REPEAT`` in distrcomp.p2p); run by test_mpi_suite.py with each build of the engine.

The sender and the receiver each keep that head per node, so these tests check that both keep
the same one however the messages are sent and taken: in arrival order (the compiled recv's
own path), queued by tag, with a timeout (the Python engine's path), between inline arrays and
pickled containers, and when the receiver's decoded heads are gone.
"""

from __future__ import annotations

import numpy as np
import pytest

from distrcomp import p2p, wire

T = 60.0


def _kind(status):
    """The distrcomp tag and kind of the message ``status`` describes (see p2p's MPI tags)."""
    mtag = status.Get_tag()
    return mtag >> 2, mtag & 3


def _probe(dc, src):
    """Wait for the next distrcomp message from ``src`` without taking it: (tag, kind, bytes)."""
    from mpi4py import MPI

    status = MPI.Status()
    dc._get().private.Probe(src, MPI.ANY_TAG, status)
    return (*_kind(status), status.Get_count())


READY = 99  # the tag of "send the next one" in lockstep


def _send_in_lockstep(dc, dest, items):
    """Send ``dest`` each ``(tag, obj)`` of ``items`` only when it asks for it (``_ask``): a
    recv that waits for a large payload takes the frames that arrive meanwhile, so without this
    the message after the one received could already be taken and queued when ``_probe``
    looks for it (seen with the Python engine at 4 nodes)."""
    for tag, obj in items:
        assert dc.recv(dest, READY, timeout=T) == "next"
        dc.send(dest, obj, tag)


def _ask(dc, src):
    """Ask ``src`` for its next message (see ``_send_in_lockstep``) and probe it."""
    dc.send(src, "next", READY)
    return _probe(dc, src)


@pytest.mark.mpi(min_size=2)
def test_an_array_with_the_head_last_sent_to_its_node_is_one_message_of_its_data(dc):
    # Shapes no other test sends, so that the first array of each has its head sent.
    a = np.arange(40_011, dtype=np.float64)
    b = np.arange(30_013, dtype=np.int32)
    f = np.asfortranarray(np.arange(3 * 2_011, dtype=np.float32).reshape(3, 2_011))
    sent = [(4, a, p2p.KINDS["FRAMED"]), (5, a + 1, p2p.KINDS["REPEAT"]), (4, b, p2p.KINDS["FRAMED"]), (4, b + 1, p2p.KINDS["REPEAT"]),
            (4, a + 2, p2p.KINDS["FRAMED"]), (6, a + 3, p2p.KINDS["REPEAT"]), (6, a + 4, p2p.KINDS["REPEAT"]),
            (4, f, p2p.KINDS["FRAMED"]), (4, f + 1, p2p.KINDS["REPEAT"]), (4, np.ascontiguousarray(f), p2p.KINDS["FRAMED"])]
    if dc.node_id == 0:
        _send_in_lockstep(dc, 1, [(tag, array) for tag, array, _ in sent])
    elif dc.node_id == 1:
        for tag, array, kind in sent:
            got_tag, got_kind, nbytes = _ask(dc, 0)
            assert (got_tag, got_kind) == (tag, kind)
            if kind == p2p.KINDS["REPEAT"]:
                assert nbytes == array.nbytes  # the data alone
            else:
                assert nbytes < 100  # the head alone; the data follows
            got = dc.recv(0, tag)
            assert got.dtype == array.dtype and got.shape == array.shape
            assert got.flags.f_contiguous == array.flags.f_contiguous
            assert got.flags.c_contiguous == array.flags.c_contiguous
            assert np.array_equal(got, array)


def _schedule(sender, dest, count=40):
    """What ``sender`` sends ``dest``: ``(tag, obj)`` pairs. Arrays of a few shapes, so that heads
    repeat, with what must not change the head kept between them: inline arrays, pickled
    containers, an array of another dtype but the same shape; half the time the kind sent just
    before. Every value says who sent it and when (``1000 * sender + i``)."""
    rng = np.random.default_rng(100 * sender + dest)
    made = []
    choice = 0
    for i in range(count):
        value = 1000 * sender + i
        if rng.random() < 0.5:
            choice = int(rng.integers(0, 8))
        if choice <= 2:
            obj = np.full(5000 + 1000 * choice, value, np.float64)
        elif choice == 3:
            obj = np.asfortranarray(np.full((100, 30), value, np.float64))
        elif choice == 4:
            obj = np.full((200, 60), value, np.float64)[:, ::2]  # copied into C order to be sent
        elif choice == 5:
            obj = np.full(10, value, np.int16)  # inline
        elif choice == 6:
            obj = {"w": np.full(5000, value, np.float64)}  # pickled, the array out of band
        else:
            obj = np.full(5000, value, np.float32)
        made.append((int(rng.integers(0, 2)), obj))
    return made


def _check(got, expected):
    if isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys()
        got, expected = got["w"], expected["w"]
    assert type(got) is np.ndarray
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert got.flags.f_contiguous == expected.flags.f_contiguous
    assert np.array_equal(got, expected)


def _value(obj):
    return int((obj["w"] if isinstance(obj, dict) else obj).flat[0])


@pytest.mark.mpi
@pytest.mark.parametrize("how", ["arrival", "by_tag"])
def test_arrays_with_repeated_heads_from_every_node_arrive_intact_and_in_order(dc, how):
    # Every node sends to every node, itself included, before receiving. "arrival": each
    # message is taken as it comes (recv from any node, no timeout: the compiled engine's own
    # path). "by_tag": every node's tag-1 messages first, then tag 0 with a timeout, so that
    # messages are taken while waiting for others and queued (the Python engine's path).
    me, n = dc.node_id, dc.n_node
    plans = {dest: _schedule(me, dest) for dest in range(n)}
    for i in range(len(plans[0])):
        for dest in range(n):
            dc.send(dest, plans[dest][i][1], plans[dest][i][0])
    expected = {src: _schedule(src, me) for src in range(n)}
    if how == "arrival":
        got = {src: [] for src in range(n)}
        for _ in range(sum(len(plan) for plan in expected.values())):
            obj = dc.recv(dc.ANY_SOURCE)
            got[_value(obj) // 1000].append(obj)
        for src in range(n):
            # Order is kept per tag; both tags are interleaved here, so compare each tag's own.
            for tag in (0, 1):
                mine = [obj for obj in got[src] if _value(obj) % 1000 in
                        {i for i, (t, _) in enumerate(expected[src]) if t == tag}]
                theirs = [obj for t, obj in expected[src] if t == tag]
                assert len(mine) == len(theirs)
                for g, e in zip(mine, theirs):
                    _check(g, e)
    else:
        for tag in (1, 0):
            for src in range(n):
                for t, obj in expected[src]:
                    if t == tag:
                        _check(dc.recv(src, tag, timeout=T), obj)


@pytest.mark.mpi(min_size=2)
def test_a_repeated_head_no_longer_in_wire_s_memory_is_read_again(dc):
    a = np.arange(25_013, dtype=np.float64)
    if dc.node_id == 0:
        _send_in_lockstep(dc, 1, [(0, a + step) for step in range(3)])
    elif dc.node_id == 1:
        assert _ask(dc, 0)[1] == p2p.KINDS["FRAMED"]
        assert np.array_equal(dc.recv(0), a)
        for step in (1, 2):
            assert _ask(dc, 0)[1] == p2p.KINDS["REPEAT"]
            wire._described.clear()
            assert np.array_equal(dc.recv(0), a + step)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("timeout", [T, None], ids=["timeout", "blocking"])
def test_a_payload_without_a_head_before_it_is_undecodable_and_the_next_message_arrives(dc, timeout):
    # distrcomp never sends one; here node 1 forgets the head node 0 compared with. The payload
    # is still received (not left to be taken as a frame), and the next message arrives.
    a = np.arange(20_011, dtype=np.float64)
    engine = dc._engine or dc._get().engine
    if dc.node_id == 0:
        dc.send(1, a, tag=3)
        assert dc.recv(1, timeout=T) == "forgotten"
        dc.send(1, a + 1, tag=3)
        dc.send(1, "after", tag=3)
        assert dc.recv(1, timeout=T) == "done"
        engine._dtypes_to[1] = None  # nothing is in flight: both sides forget the head
    elif dc.node_id == 1:
        assert np.array_equal(dc.recv(0, timeout=timeout), a)
        engine._heads_from[0] = None
        dc.send(0, "forgotten")
        with pytest.raises(dc.MessageDecodeError, match="from node 0 \\(tag 3\\).*without an array head"):
            dc.recv(0, timeout=timeout)
        assert dc.recv(0, timeout=timeout) == "after"
        dc.send(0, "done")


@pytest.mark.mpi(min_size=2)
def test_a_recv_that_waits_for_a_repeated_array_gets_it_and_whatever_comes_instead(dc):
    # Node 1 asks before node 0 sends (node 0 waits for its "next", then a little), so the
    # compiled recv makes the array of the last head while it waits, on an idle block of the
    # cache. What comes may be that array, one of another shape, another object, or that array
    # with another tag than asked for (taken and queued while waiting for the one asked for).
    import time

    a = np.arange(140_011, dtype=np.float64)  # more than 1 MiB: its memory is a block of the cache
    b = np.arange(20_011, dtype=np.int64).reshape(20_011, 1)
    plan = [(0, a), (0, a + 1), (0, a + 2), (0, b), (0, b + 1), (0, "text"), (0, a + 3), (5, a + 4),
            (0, a + 5)]
    if dc.node_id == 0:
        for tag, obj in plan:
            assert dc.recv(1, READY, timeout=T) == "next"
            time.sleep(0.02)  # node 1 is waiting in recv by now
            dc.send(1, obj, tag)
    elif dc.node_id == 1:

        def check(got, obj):
            if isinstance(obj, str):
                assert got == obj
            else:
                assert got.dtype == obj.dtype and got.shape == obj.shape and np.array_equal(got, obj)

        kept = None
        for i in range(7):
            dc.send(0, "next", READY)
            got = dc.recv(0, 0)
            check(got, plan[i][1])
            if i == 1:
                kept = got  # its block is not idle: the next array gets another one
        dc.send(0, "next", READY)
        dc.send(0, "next", READY)
        check(dc.recv(0, 0), plan[8][1])
        check(dc.recv(0, 5, timeout=T), plan[7][1])
        check(kept, plan[1][1])  # nothing was received into it since

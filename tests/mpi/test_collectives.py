"""Collectives under real mpiexec (1, 2 and 4 ranks)."""

from __future__ import annotations

import gc

import numpy as np
import pytest

T = 120


@pytest.mark.mpi
def test_barrier_returns_everywhere(dc):
    dc.barrier()
    dc.barrier()


@pytest.mark.mpi
@pytest.mark.parametrize(
    "value",
    [{"k": [1, 2]}, np.arange(12.0).reshape(3, 4), np.asfortranarray(np.ones((700, 300), ">i4")),
     np.zeros((0, 2)), "z" * 50_000],
    ids=["dict", "small-array", "large-fortran-bigendian", "empty", "long-str"],
)
def test_bcast_from_every_root(dc, value):
    for root in range(dc.n_node):
        got = dc.bcast(value if dc.node_id == root else None, root=root)
        if isinstance(value, np.ndarray):
            assert got.dtype == value.dtype and got.shape == value.shape
            np.testing.assert_array_equal(got, value)
            assert got.flags.f_contiguous == value.flags.f_contiguous
        else:
            assert got == value


@pytest.mark.mpi
def test_bcast_of_read_only_array(dc):
    a = np.arange(10**6)
    a.setflags(write=False)
    np.testing.assert_array_equal(dc.bcast(a if dc.node_id == 0 else None), np.arange(10**6))


@pytest.mark.mpi
def test_scatter_gather_allgather(dc):
    n, me = dc.n_node, dc.node_id
    items = [np.full(10 + 5000 * i, i) for i in range(n)] if me == 0 else None
    mine = dc.scatter(items, root=0)
    assert mine.shape == (10 + 5000 * me,) and (mine == me).all()
    gathered = dc.gather({"me": me, "a": mine}, root=n - 1)
    if me == n - 1:
        assert [g["me"] for g in gathered] == list(range(n))
        assert all((g["a"] == i).all() for i, g in enumerate(gathered))
    else:
        assert gathered is None
    everyone = dc.allgather(np.full((2, 3), me, np.int16))
    assert [int(a[0, 0]) for a in everyone] == list(range(n))
    assert all(a.dtype == np.int16 and a.shape == (2, 3) for a in everyone)


@pytest.mark.mpi
def test_scatter_with_wrong_length_raises_at_root(dc):
    if dc.node_id == 0:
        with pytest.raises(ValueError, match=f"exactly n_node={dc.n_node} items, got {dc.n_node + 1}"):
            dc.scatter(list(range(dc.n_node + 1)))


@pytest.mark.mpi
@pytest.mark.parametrize("op, expect", [("sum", lambda n: n * (n - 1) / 2), ("max", lambda n: n - 1),
                                        ("min", lambda n: 0), ("prod", lambda n: 0)])
def test_allreduce_and_reduce_of_arrays(dc, op, expect):
    n, me = dc.n_node, dc.node_id
    a = np.full(1 << 20, me, np.float64)
    out = dc.allreduce(a, op)
    assert out.shape == a.shape and (out == expect(n)).all()
    assert (a == me).all()
    r = dc.reduce(a, op, root=0)
    if me == 0:
        assert (r == expect(n)).all()
    else:
        assert r is None


@pytest.mark.mpi
def test_allreduce_of_python_objects_and_custom_op(dc):
    n, me = dc.n_node, dc.node_id
    assert dc.allreduce(me) == n * (n - 1) // 2
    assert dc.allreduce([me], op=lambda a, b: a + b) == list(range(n))
    assert dc.allreduce(np.array([me], ">i4"), "max")[0] == n - 1  # non-native dtype: reduced in Python
    with pytest.raises(ValueError, match="op must be one of"):
        dc.allreduce(1, op="avg")


@pytest.mark.mpi
def test_collective_after_a_large_send_does_not_deadlock(dc):
    """A node blocked in a collective keeps accepting the large array a neighbour sends first."""
    right, left = (dc.node_id + 1) % dc.n_node, (dc.node_id - 1) % dc.n_node
    dc.send(right, np.ones(8 << 20))
    dc.barrier()
    total = dc.allreduce(1)
    assert total == dc.n_node
    assert dc.recv(left, timeout=T).sum() == 8 << 20


@pytest.mark.mpi(min_size=2)
def test_an_interrupted_allreduce_keeps_its_memory_until_mpi_is_done_with_it(dc, interrupt_after):
    # Node 0's allreduce is interrupted before node 1 joins it; node 0 then receives an array
    # of the result's size. The abandoned reduction completes later, once node 1 has joined:
    # it must write into memory of its own, not into the array node 0 received meanwhile.
    n = 1 << 20
    mine = np.full(n, dc.node_id + 1.0)
    if dc.node_id == 0:
        with interrupt_after(0.3):
            dc.allreduce(mine)
        gc.collect()
        dc.comm.send("interrupted", dest=1, tag=98)
        got = dc.recv(1)
        dc.barrier()  # the abandoned reduction completes while this waits
        np.testing.assert_array_equal(got, np.full(n, 7.0))
    else:
        if dc.node_id == 1:
            assert dc.comm.recv(source=0, tag=98) == "interrupted"
            dc.send(0, np.full(n, 7.0))
        total = dc.allreduce(mine)
        dc.barrier()
        np.testing.assert_array_equal(total, np.full(n, dc.n_node * (dc.n_node + 1) / 2))

"""The receive-block cache: a block is handed out again only once nothing refers to it."""

from __future__ import annotations

import numpy as np
import pytest

from distrcomp import buffers
from distrcomp.buffers import MIN_BYTES, BlockCache


def test_a_dropped_block_is_reused_for_the_same_size():
    cache = BlockCache(64 * MIN_BYTES)
    first = cache.block(2 * MIN_BYTES)
    address = first.ctypes.data
    del first
    assert cache.block(2 * MIN_BYTES).ctypes.data == address


@pytest.mark.parametrize("derive", [
    lambda a: a[::2], lambda a: a.reshape(2, -1).T, memoryview,
    lambda a: np.frombuffer(a, np.uint8), lambda a: {"inside": a},
], ids=["slice", "reshape", "memoryview", "frombuffer", "container"])
def test_a_block_still_reachable_from_anything_derived_is_never_handed_out(derive):
    cache = BlockCache(64 * MIN_BYTES)
    array = np.ndarray((MIN_BYTES // 4,), np.float64, buffer=cache.block(2 * MIN_BYTES))
    derived = derive(array)
    del array
    assert not np.shares_memory(cache.block(2 * MIN_BYTES), np.asarray(_first_array(derived)))


def _first_array(obj):
    return obj["inside"] if isinstance(obj, dict) else obj


def test_small_sizes_and_sizes_over_the_limit_are_not_cached():
    cache = BlockCache(4 * MIN_BYTES)
    cache.block(MIN_BYTES - 1)
    cache.block(8 * MIN_BYTES)
    assert cache._blocks == [] and cache._held == 0


def test_the_limit_counts_blocks_in_use_and_evicts_idle_ones_first():
    cache = BlockCache(5 * MIN_BYTES)
    kept = cache.block(2 * MIN_BYTES)
    idle = cache.block(2 * MIN_BYTES)
    del idle
    other = cache.block(3 * MIN_BYTES)  # evicts the idle block to fit under the limit
    assert cache._held == 5 * MIN_BYTES and len(cache._blocks) == 2
    extra = cache.block(2 * MIN_BYTES)  # nothing idle to evict: allocated, not held
    assert cache._held == 5 * MIN_BYTES and len(cache._blocks) == 2
    assert not np.shares_memory(extra, kept) and not np.shares_memory(extra, other)


def test_empty_gives_the_shape_dtype_and_order_asked_for():
    for fortran in (False, True):
        out = buffers.empty((512, 1024), np.dtype(np.float32), fortran)
        assert out.shape == (512, 1024) and out.dtype == np.float32 and out.flags.writeable
        assert out.flags.f_contiguous if fortran else out.flags.c_contiguous
    assert buffers.empty((3,), np.dtype(np.int8)).flags.owndata

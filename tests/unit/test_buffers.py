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
    assert cache.blocks == [] and cache._held == 0


def test_the_limit_counts_blocks_in_use_and_evicts_idle_ones_first():
    cache = BlockCache(5 * MIN_BYTES)
    kept = cache.block(2 * MIN_BYTES)
    idle = cache.block(2 * MIN_BYTES)
    del idle
    other = cache.block(3 * MIN_BYTES)  # evicts the idle block to fit under the limit
    assert cache._held == 5 * MIN_BYTES and len(cache.blocks) == 2
    extra = cache.block(2 * MIN_BYTES)  # nothing idle to evict: allocated, not held
    assert cache._held == 5 * MIN_BYTES and len(cache.blocks) == 2
    assert not np.shares_memory(extra, kept) and not np.shares_memory(extra, other)


def test_empty_gives_the_shape_dtype_and_order_asked_for():
    for fortran in (False, True):
        out = buffers.empty((512, 1024), np.dtype(np.float32), fortran)
        assert out.shape == (512, 1024) and out.dtype == np.float32 and out.flags.writeable
        assert out.flags.f_contiguous if fortran else out.flags.c_contiguous
    assert buffers.empty((3,), np.dtype(np.int8)).flags.owndata


@pytest.mark.parametrize("nbytes", [MIN_BYTES, buffers.HUGE_PAGE - 8, buffers.HUGE_PAGE,
                                    4 * MIN_BYTES + 4096 * 3 + 8, 128 * MIN_BYTES])
def test_blocks_start_at_the_page_offset_and_from_2_mib_on_on_a_huge_page_boundary(nbytes):
    cache = BlockCache(256 * MIN_BYTES)
    np.empty(30 << 20, np.uint8)  # freed: glibc then serves smaller sizes from its heap, anywhere
    for _ in range(3):
        kept = [np.empty(nbytes + size, np.uint8) for size in (16, 32, 48)]  # move its heap on
        block = cache.block(nbytes)
        address = block.ctypes.data
        assert block.nbytes == nbytes and block.dtype == np.uint8 and block.flags.writeable
        assert address % 4096 == buffers.PAGE_OFFSET
        if nbytes >= buffers.HUGE_PAGE:
            assert (address - buffers.PAGE_OFFSET) % buffers.HUGE_PAGE == 0
        block[:] = 1  # all of it is in its owner's memory
        assert block.base.nbytes - nbytes <= buffers.HUGE_PAGE + buffers.PAGE_OFFSET
        del kept


def test_a_block_is_not_handed_out_while_its_owner_is_reachable_without_the_block():
    # Arrays made on a block have the owner of its memory as their base, not the block.
    cache = BlockCache(64 * MIN_BYTES)
    array = np.ndarray((MIN_BYTES // 2,), np.float64, buffer=cache.block(4 * MIN_BYTES))
    assert array.base is not None and array.base is cache.blocks[0][2]
    view = array[1::2]
    del array
    assert not np.shares_memory(cache.block(4 * MIN_BYTES), view)

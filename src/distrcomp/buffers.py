"""Memory for received arrays: large blocks are reused once the program has dropped them.

Every array distrcomp returns (``recv``, ``bcast``, ``allreduce``, ...) is new memory owned by
the receiver. Fresh large memory is expensive: the kernel maps it page by page on first touch,
and under virtualisation that costs more than the copy into it (measured on the 2-core
benchmark VM: a fresh 128 MiB block costs ~0.2-0.8 s of page faults, receiving into memory
already touched ~0.03 s). So the memory of large received arrays is kept here, and handed out
again when a block of the same size is asked for and nothing but this cache refers to it any
more - the usual situation in a loop that receives an array of the same shape each step.

Why reuse is safe: an array handed out has its block as ``base``, and so has every view,
slice or memoryview derived from it (numpy keeps the base chain), so a block whose only
reference is this cache cannot be reached by the program. Blocks below ``MIN_BYTES`` are
left to the allocator, which reuses small memory well on its own. At most ``limit`` bytes
(``DISTRCOMP_RECV_CACHE_MB``, default 512; 0 turns the cache off) are held by the cache,
counting blocks in use; beyond that, arrays are allocated as usual.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

__all__ = ["MIN_BYTES", "BlockCache", "block", "empty"]

MIN_BYTES = 1 << 20
_DEFAULT_LIMIT_MB = 512


def _idle_count() -> int:
    """What ``sys.getrefcount(blocks[i])`` reads for a block only the cache refers to.

    Measured rather than assumed (2 on CPython 3.9-3.13: the list and the argument), since
    interpreters that borrow references for arguments report less.
    """
    blocks = [np.empty(0, np.uint8)]
    return sys.getrefcount(blocks[0])


_IDLE = _idle_count()


class BlockCache:
    """Blocks of ``uint8`` memory, least recently handed out first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._blocks: list[np.ndarray] = []
        self._held = 0

    def block(self, nbytes: int) -> np.ndarray:
        """A writable ``uint8`` array of ``nbytes`` whose memory nobody else refers to."""
        if nbytes < MIN_BYTES or nbytes > self.limit:
            return np.empty(nbytes, np.uint8)
        blocks = self._blocks
        for index in range(len(blocks)):
            if blocks[index].nbytes == nbytes and sys.getrefcount(blocks[index]) == _IDLE:
                found = blocks.pop(index)
                blocks.append(found)
                return found
        self._make_room(nbytes)
        fresh = np.empty(nbytes, np.uint8)
        if self._held + nbytes <= self.limit:
            blocks.append(fresh)
            self._held += nbytes
        return fresh

    def _make_room(self, nbytes: int) -> None:
        """Forget idle blocks, oldest first, until ``nbytes`` more fit under the limit."""
        blocks = self._blocks
        index = 0
        while self._held + nbytes > self.limit and index < len(blocks):
            if sys.getrefcount(blocks[index]) == _IDLE:
                self._held -= blocks.pop(index).nbytes
            else:
                index += 1


def _limit() -> int:
    raw = os.environ.get("DISTRCOMP_RECV_CACHE_MB", "").strip()
    try:
        return int(float(raw) * (1 << 20)) if raw else _DEFAULT_LIMIT_MB << 20
    except ValueError:
        return _DEFAULT_LIMIT_MB << 20


_cache = BlockCache(_limit())


def block(nbytes: int) -> np.ndarray:
    """A new writable ``uint8`` array of ``nbytes`` (see the module docstring for reuse)."""
    return _cache.block(nbytes)


def empty(shape: Any, dtype: np.dtype, fortran: bool = False) -> np.ndarray:
    """Like ``np.empty(shape, dtype, order)``, with its memory from :func:`block`."""
    nbytes = dtype.itemsize
    for extent in shape:
        nbytes *= extent
    if nbytes < MIN_BYTES:
        return np.empty(shape, dtype, order="F" if fortran else "C")
    return np.ndarray(shape, dtype, buffer=_cache.block(nbytes), order="F" if fortran else "C")

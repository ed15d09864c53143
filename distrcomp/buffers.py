"""Memory for received arrays: large blocks are reused once the program has dropped them.

Every array distrcomp returns (``recv``, ``bcast``, ``allreduce``, ...) is new memory owned by
the receiver. Fresh large memory is expensive: the kernel maps it page by page on first touch,
and under virtualisation that costs more than the copy into it (measured on the 2-core
benchmark VM: a fresh 128 MiB block costs ~0.2-0.8 s of page faults, receiving into memory
already touched ~0.03 s). So the memory of large received arrays is kept here, and handed out
again when a block of the same size is asked for and nothing but this cache refers to it any
more - the usual situation in a loop that receives an array of the same shape each step.

Why reuse is safe: a block is a view of an array that owns the memory (its ``owner``); an
array made on the block, and every view, slice or memoryview derived from either, refers to
the block or to the owner (numpy sets ``base`` to the array owning the memory), so a block
that only this cache refers to, and whose owner only the block and this cache refer to, cannot
be reached by the program. Blocks below ``MIN_BYTES`` are left to the allocator, which reuses
small memory well on its own. At most ``limit`` bytes (``DISTRCOMP_RECV_CACHE_MB``, default
512; 0 turns the cache off) are held by the cache, counting blocks in use; beyond that, arrays
are allocated as usual.

Why a view: the block is placed in its owner's memory rather than wherever the allocator put
it. It starts 16 bytes into a page (``PAGE_OFFSET``), where glibc puts every allocation too large
for its heap, so most large arrays a program sends: the copy into it runs at full speed only
when source and destination sit at the same offset modulo 32 bytes (measured on the 2-core
benchmark VM, receiving 4 and 16 MiB from an array at offset 16: into offset 16, 48 or 80 0.99-1x,
into offset 0 0.74-0.77x, 32 0.50-0.58x; ``np.empty`` gives any multiple of 16 once the
allocator serves large sizes from its heap, which it does after freeing some). And from
``HUGE_PAGE`` (2 MiB) on, its pages start on a 2 MiB boundary, so that the kernel can back all
of it with transparent huge pages (numpy asks for them for allocations of 4 MiB or more; an
``np.empty`` array gets them only for the part of it that happens to be aligned): measured,
``Allreduce`` of 8 MiB 1.10-1.11x as fast into such a block as into ``np.empty``. It costs at
most 2 MiB of address space per block, and of memory when the block's last huge page is only
partly used.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

__all__ = ["MIN_BYTES", "BlockCache", "block", "empty"]

MIN_BYTES = 1 << 20
HUGE_PAGE = 2 << 20
PAGE_OFFSET = 16
_PAGE = 4096
_DEFAULT_LIMIT_MB = 512


def _idle_counts() -> tuple[int, int]:
    """What ``sys.getrefcount`` reads for an idle entry's block and owner (see ``_idle``).

    Measured rather than assumed (2 and 3 on CPython 3.9-3.13: the entry, the block's base and
    the argument), since interpreters that borrow references for arguments report less.
    """
    owner = np.empty(1, np.uint8)
    blocks = [(1, owner[:], owner)]
    del owner
    return sys.getrefcount(blocks[0][1]), sys.getrefcount(blocks[0][2])


_IDLE_BLOCK, _IDLE_OWNER = _idle_counts()


def _idle(entry: tuple[int, np.ndarray, np.ndarray]) -> bool:
    """True if nothing but the cache refers to the entry's memory."""
    return sys.getrefcount(entry[1]) == _IDLE_BLOCK and sys.getrefcount(entry[2]) == _IDLE_OWNER


def _new_entry(nbytes: int) -> tuple[int, np.ndarray, np.ndarray]:
    """``(nbytes, block, owner)``: a new block, ``PAGE_OFFSET`` bytes past a page boundary (a
    2 MiB one from ``HUGE_PAGE`` on)."""
    boundary = HUGE_PAGE if nbytes >= HUGE_PAGE else _PAGE
    owner = np.empty(nbytes + boundary + PAGE_OFFSET, np.uint8)
    skip = -owner.ctypes.data % boundary + PAGE_OFFSET
    return nbytes, owner[skip:skip + nbytes], owner


class BlockCache:
    """Blocks of ``uint8`` memory, least recently handed out first.

    ``blocks`` is the list of ``(nbytes, block, owner)`` entries, oldest first.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.blocks: list[tuple[int, np.ndarray, np.ndarray]] = []
        self._held = 0

    def block(self, nbytes: int) -> np.ndarray:
        """A writable ``uint8`` array of ``nbytes`` whose memory nobody else refers to."""
        if nbytes < MIN_BYTES or nbytes > self.limit:
            return np.empty(nbytes, np.uint8)
        blocks = self.blocks
        for index in range(len(blocks)):
            if blocks[index][0] == nbytes and _idle(blocks[index]):
                found = blocks.pop(index)
                blocks.append(found)
                return found[1]
        self._make_room(nbytes)
        entry = _new_entry(nbytes)
        if self._held + nbytes <= self.limit:
            blocks.append(entry)
            self._held += nbytes
        return entry[1]

    def _make_room(self, nbytes: int) -> None:
        """Forget idle blocks, oldest first, until ``nbytes`` more fit under the limit."""
        blocks = self.blocks
        index = 0
        while self._held + nbytes > self.limit and index < len(blocks):
            if _idle(blocks[index]):
                self._held -= blocks.pop(index)[0]
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

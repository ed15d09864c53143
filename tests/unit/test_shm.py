"""Which shared-memory segments the launcher may remove after a job (real files in /dev/shm,
real processes holding them)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from distrcomp.launcher import shm

pytestmark = pytest.mark.skipif(not os.access(shm.SHM, os.W_OK), reason="no writable /dev/shm")

# A child that holds PATH open (``open``) or mapped with its descriptor closed (``map``; by
# libc's mmap: Python's mmap keeps a descriptor of its own), says so, then waits to be killed.
HOLD = """
import ctypes, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
if sys.argv[2] == "map":
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    if libc.mmap(None, 4096, 3, 1, fd, 0) in (None, ctypes.c_void_p(-1).value):  # MAP_SHARED
        sys.exit("mmap failed: errno %d" % ctypes.get_errno())
    os.close(fd)
    if os.listdir("/proc/self/fd") != ["0", "1", "2", "3"]:  # stdio and listdir's own
        sys.exit("a descriptor is still open: %s" % os.listdir("/proc/self/fd"))
print("holding", flush=True)
time.sleep(60)
"""


@pytest.fixture
def segment():
    """A 4 KiB file named as MPICH names its segments, removed after the test."""
    path = Path(shm.SHM) / f"{shm.PREFIXES[0]}distrcomp-test-{uuid.uuid4().hex}"
    path.write_bytes(b"\0" * 4096)
    yield str(path)
    path.unlink(missing_ok=True)


def _held(path: str, how: str) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLD, path, how], stdout=subprocess.PIPE,
                             stdin=subprocess.DEVNULL)
    assert child.stdout is not None and child.stdout.readline() == b"holding\n"
    return child


def _ours(since: float) -> list[str]:
    return [p for p in shm.unused_segments(since) if "distrcomp-test-" in p]


def test_a_segment_nothing_uses_is_found(segment):
    assert _ours(time.time() - 5) == [segment]


@pytest.mark.parametrize("how", ["open", "map"])
def test_a_segment_open_or_mapped_by_a_process_is_kept_until_it_is_gone(segment, how):
    child = _held(segment, how)
    try:
        assert _ours(time.time() - 5) == []
    finally:
        child.kill()
        child.wait()
    assert _ours(time.time() - 5) == [segment]


def test_a_segment_from_before_the_job_or_not_named_as_mpi_names_them_is_kept(segment, tmp_path):
    assert _ours(time.time() + 10) == []  # made more than CLOCK_SLACK before the job began
    other = Path(shm.SHM) / f"distrcomp-test-{uuid.uuid4().hex}"
    other.write_bytes(b"")
    try:
        assert str(other) not in shm.unused_segments(time.time() - 5)
    finally:
        other.unlink()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give a file to another user")
def test_another_users_segment_is_kept(segment):
    os.chown(segment, 65534, 65534)
    assert _ours(time.time() - 5) == []


def test_a_directory_that_cannot_be_read_gives_nothing(tmp_path):
    assert shm.unused_segments(0, str(tmp_path / "missing")) == []

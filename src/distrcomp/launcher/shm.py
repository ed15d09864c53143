"""Shared memory MPI leaves behind in ``/dev/shm`` when a job's nodes are killed.

MPICH keeps each host's shared-memory segment (``/dev/shm/mpich_shm_*``, a few MB) until
``MPI_Finalize``; nodes killed before it (the others of a failed node, a time limit, Ctrl-C)
leave it behind, memory that nothing frees until the machine restarts (bare ``mpiexec`` leaves
the same). Open MPI removes its own (``sm_segment.*``; ``vader_segment.*`` before 5.0) but
not always: 76 of them had gathered on the machine this was written on. After a job, once no process of it is left, the launcher removes those of its own
machine that the job may have made and that nothing uses (:func:`unused_segments`): named as
MPI names them, owned by this user, made or changed since shortly before the job began, and
neither open nor mapped by any process. A segment of another running job is never taken: its
maker holds it open (while creating it) or mapped (after) for as long as that job runs.

Linux only: where ``/dev/shm`` or ``/proc`` cannot be read, nothing is found.
"""

from __future__ import annotations

import os
import stat

__all__ = ["PREFIXES", "unused_segments"]

SHM = "/dev/shm"
PREFIXES = ("mpich_shm_", "sm_segment.", "vader_segment.")  # MPICH; Open MPI 5; Open MPI 4
CLOCK_SLACK = 1.0  # seconds: file times come from a coarse clock that may lag time.time()
_PROC = "/proc"


def unused_segments(since: float, directory: str = SHM) -> list[str]:
    """Paths of the MPI segments in ``directory`` owned by this user, made or changed at or
    after ``since`` (``time.time()`` seconds, less :data:`CLOCK_SLACK`), that no process has
    open or mapped, sorted. Removes nothing; reads ``/proc`` only when there are candidates."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    uid = os.getuid()
    candidates: dict[tuple[int, int], str] = {}
    for name in names:
        if not name.startswith(PREFIXES):
            continue
        path = os.path.join(directory, name)
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode) and info.st_uid == uid \
                and info.st_ctime >= since - CLOCK_SLACK:
            candidates[(info.st_dev, info.st_ino)] = path
    if not candidates:
        return []
    in_use = _in_use(set(candidates))
    return sorted(path for key, path in candidates.items() if key not in in_use)


def _in_use(files: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """Those of ``files`` (device, inode) that a process has open or mapped.

    Each process's descriptors are read before its mappings: a maker opens a segment, maps it,
    then may close it, so one read in that order cannot miss it. A process whose /proc entries
    cannot be read (another user's) cannot have this user's segments (mode 0600) either.
    """
    found: set[tuple[int, int]] = set()
    try:
        pids = [name for name in os.listdir(_PROC) if name.isdigit()]
    except OSError:
        return found
    for pid in pids:
        found |= _open_files(pid, files) | _mapped_files(pid, files)
        if found == files:
            break
    return found


def _open_files(pid: str, files: set[tuple[int, int]]) -> set[tuple[int, int]]:
    directory = f"{_PROC}/{pid}/fd"
    try:
        fds = os.listdir(directory)
    except OSError:
        return set()
    found = set()
    for fd in fds:
        try:
            info = os.stat(f"{directory}/{fd}")  # the open file itself, even if unlinked
        except OSError:
            continue
        key = (info.st_dev, info.st_ino)
        if key in files:
            found.add(key)
    return found


def _mapped_files(pid: str, files: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """From /proc/PID/maps: ``address perms offset major:minor inode path`` per line."""
    try:
        with open(f"{_PROC}/{pid}/maps", "rb") as handle:
            data = handle.read()
    except OSError:
        return set()
    found = set()
    for line in data.splitlines():
        fields = line.split(None, 5)
        if len(fields) < 6 or fields[4] == b"0":
            continue
        major, _, minor = fields[3].partition(b":")
        try:
            key = (os.makedev(int(major, 16), int(minor, 16)), int(fields[4]))
        except ValueError:
            continue
        if key in files:
            found.add(key)
    return found

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

from . import procs

__all__ = ["PREFIXES", "unused_segments"]

SHM = "/dev/shm"
PREFIXES = ("mpich_shm_", "sm_segment.", "vader_segment.")  # MPICH; Open MPI 5; Open MPI 4
CLOCK_SLACK = 1.0  # seconds: file times come from a coarse clock that may lag time.time()


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
    in_use = procs.files_in_use(set(candidates))
    return sorted(path for key, path in candidates.items() if key not in in_use)

"""The launch helpers' own checks look only at what their job made (issue 24, item 15): other
MPI jobs share this machine, and their shared memory is not this job's leftover."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from jobtools import SEGMENTS, start


def test_a_segment_another_job_leaves_meanwhile_is_not_blamed_on_this_one(tmp_path):
    # before: every segment that appeared during the launch and was unused afterwards failed it
    foreign = Path("/dev/shm") / f"{SEGMENTS[0]}distrcomp-test-{uuid.uuid4().hex}_0"
    job = start(tmp_path, "run", "-n", "2", "--", "sleep", "1")
    # another job's segment: in use while this job runs (so its launcher leaves it alone),
    # left behind just after, as a killed MPICH job leaves its own
    held = os.open(foreign, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        job.proc.wait(timeout=120)
        os.close(held)
        held = -1
        done = job.wait()
        assert done.returncode == 0, done
    finally:
        if held >= 0:
            os.close(held)
        foreign.unlink(missing_ok=True)


def test_the_segments_of_the_job_itself_are_seen(tmp_path):
    # the check still sees the job's own: a node that maps a segment while it runs
    name = f"{SEGMENTS[0]}distrcomp-test-{uuid.uuid4().hex}_0"
    code = (f"import mmap, os, time\n"
            f"fd = os.open('/dev/shm/{name}', os.O_CREAT | os.O_RDWR, 0o600)\n"
            f"os.ftruncate(fd, 4096)\n"
            f"m = mmap.mmap(fd, 4096)\n"
            f"open('ready', 'w').close()\n"
            f"time.sleep(1)\n")
    job = start(tmp_path, "run", "--", "python3", "-c", code)
    try:
        job.proc.wait(timeout=120)
        seen = job.segments.stop()
        job.proc.communicate()
    finally:
        Path("/dev/shm", name).unlink(missing_ok=True)
    assert name in seen, seen

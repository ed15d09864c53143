"""The process table helpers the launcher and the node wrapper clean up with (real processes)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

from distrcomp.launcher import procs

SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


def _start(**kwargs) -> subprocess.Popen:
    return subprocess.Popen(SLEEP, stdin=subprocess.DEVNULL, **kwargs)


def test_any_left_sees_a_process_of_the_group():
    child = _start(process_group=0)
    try:
        assert procs.any_left(child.pid, "DISTRCOMP_TEST_MARK", "none")
    finally:
        child.kill()
        child.wait()
    assert not procs.any_left(child.pid, "DISTRCOMP_TEST_MARK", "none")


def test_any_left_sees_a_marked_process_in_a_session_of_its_own():
    mark = uuid.uuid4().hex
    child = _start(start_new_session=True, env={**os.environ, "DISTRCOMP_TEST_MARK": mark})
    try:
        assert procs.any_left(-1, "DISTRCOMP_TEST_MARK", mark)
        assert [pid for pid, _ in procs.processes_with_env("DISTRCOMP_TEST_MARK", mark)] \
            == [child.pid]
        assert not procs.any_left(-1, "DISTRCOMP_TEST_MARK", "other")
        assert not procs.any_left(-1, "DISTRCOMP_TEST_MARK", mark, exclude=(child.pid,))
    finally:
        child.kill()
        child.wait()
    assert not procs.any_left(-1, "DISTRCOMP_TEST_MARK", mark)


def test_a_marked_process_is_seen_while_it_execs(tmp_path):
    # During an exec a process shows an empty environment for a moment; a scan then must not
    # miss it (before: one scan in ten missed a process that keeps exec'ing itself).
    script = tmp_path / "again.sh"
    script.write_text(f"#!/bin/sh\nexec {script}\n")
    script.chmod(0o755)
    mark = uuid.uuid4().hex
    child = subprocess.Popen([str(script)], env={**os.environ, "DISTRCOMP_TEST_MARK": mark},
                             start_new_session=True)
    try:
        missed = sum(not procs.any_left(-1, "DISTRCOMP_TEST_MARK", mark) for _ in range(300))
        missed += sum(not procs.processes_with_env("DISTRCOMP_TEST_MARK", mark) for _ in range(300))
    finally:
        child.kill()
        child.wait()
    assert missed == 0, f"{missed} of 600 scans missed the process"

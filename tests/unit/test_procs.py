"""The process table helpers the launcher and the node wrapper clean up with (real processes)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
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


def test_any_left_reads_no_process_older_than_since():
    mark = uuid.uuid4().hex
    child = _start(start_new_session=True, env={**os.environ, "DISTRCOMP_TEST_MARK": mark})
    try:
        started = procs.start_time(child.pid)
        assert started is not None and started >= procs.start_time(os.getpid())
        assert procs.any_left(-1, "DISTRCOMP_TEST_MARK", mark, since=started)
        # started before `since`: it cannot be what a command started then left running
        assert not procs.any_left(-1, "DISTRCOMP_TEST_MARK", mark, since=started + 1)
    finally:
        child.kill()
        child.wait()
    assert procs.start_time(child.pid) is None


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


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat", "rb") as handle:
        data = handle.read()
    return data[data.rfind(b")") + 2:].decode().split()


def _wait_for(pid: int, state: str | None = None, comm: str | None = None) -> None:
    for _ in range(2000):
        with open(f"/proc/{pid}/comm") as handle:
            name = handle.read().strip()
        if (state is None or _stat(pid)[0] == state) and (comm is None or name == comm):
            return
        time.sleep(0.005)
    raise AssertionError(f"process {pid} never reached state {state} / name {comm}")


def test_an_empty_environment_is_read_again_only_a_few_times(monkeypatch):
    # A process whose environment is empty for good (env -i) looks for a moment like one in the
    # middle of an exec; it was read again 20 times, 1 ms apart, in every scan (the end of every
    # node and the launcher's cleanup waited 20 ms per such process).
    child = subprocess.Popen([shutil.which("sleep"), "60"], env={}, start_new_session=True)
    try:
        _wait_for(child.pid, comm="sleep")
        # the exec is over only once its environment is in place (env_end, stat field 51): the
        # name changes before, and until then the scan rightly waits (this test once saw 7 looks)
        for _ in range(2000):
            if _stat(child.pid)[48] != "0":
                break
            time.sleep(0.005)
        with open(f"/proc/{child.pid}/environ", "rb") as handle:
            assert handle.read() == b""
        waits: list[float] = []
        monkeypatch.setattr(procs.time, "sleep", waits.append)
        assert not procs._carries(child.pid, b"DISTRCOMP_TEST_MARK=x")
        assert 0 < len(waits) <= 3, waits  # procs._EMPTY_LOOKS waits, not 20
        assert not procs.any_left(-1, "DISTRCOMP_TEST_MARK", "x", exclude=(os.getpid(),))
    finally:
        child.kill()
        child.wait()


def test_nothing_is_waited_for_in_an_exited_process_or_a_kernel_thread():
    # Neither has an environment to show (nor has a process that is exiting, whose memory is
    # gone before it becomes a zombie): reading it again could never find one.
    child = subprocess.Popen(["true"], start_new_session=True)
    try:
        _wait_for(child.pid, state="Z")  # exited, not yet reaped
        assert procs._environment_place(child.pid) is None
    finally:
        child.wait()
    assert procs._environment_place(child.pid) is None  # gone
    threads = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
               if pid > 1 and (procs._stat_fields(pid) or ["", "", ""])[2] == "0"]  # kernel threads
    assert threads, "no kernel thread visible in /proc"
    assert procs._environment_place(threads[0]) is None
    start, end = procs._environment_place(os.getpid())
    assert 0 < int(start) < int(end)  # this process's environment, in place

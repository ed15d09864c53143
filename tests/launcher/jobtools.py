"""Helpers for the CLI tests: ``distrcomp`` as a real subprocess under real mpiexec.

Plain functions rather than fixtures: a ``conftest.py`` here would shadow ``tests/conftest.py``
for the ``from conftest import ...`` in tests/test_mpi_suite.py.

Every launch carries a unique marker in its environment; after the launcher has exited, the
``launch``/``start`` helpers fail the test if any process with that marker is still alive, or
if a shared-memory segment of MPI that the job's processes had open or mapped is left in
/dev/shm (the launcher must leave nothing of the job behind, whatever happened). Only the
job's own are looked at: other MPI jobs run on the same machine, and may leave theirs.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import caller_environ
from tagged import TAGGED, tagged_lines  # noqa: F401 - re-exported for the launcher tests

ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = Path(__file__).resolve().parent / "programs"
MARK = "DISTRCOMP_TEST_MARK"


def processes_with_mark(mark: str) -> list[str]:
    """``pid (name)`` of live processes whose environment carries ``MARK=mark``."""
    needle = f"{MARK}={mark}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                if needle not in handle.read().split(b"\0"):
                    continue
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        if stat[stat.rfind(b")") + 2:].startswith(b"Z"):
            continue
        found.append(f"{name} ({stat[stat.find(b'(') + 1:stat.rfind(b')')].decode()})")
    return found


SEGMENTS = ("mpich_shm_", "sm_segment.", "vader_segment.")  # MPICH, Open MPI 5, Open MPI 4


def mpi_segments() -> set[str]:
    """Names of the shared-memory segments MPI keeps in /dev/shm."""
    try:
        return {name for name in os.listdir("/dev/shm") if name.startswith(SEGMENTS)}
    except OSError:
        return set()


def segments_of(pids: Sequence[int]) -> set[str]:
    """Names of the MPI segments in /dev/shm that ``pids`` have open or mapped."""
    paths = []
    for pid in pids:
        try:
            paths += [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
            with open(f"/proc/{pid}/maps") as handle:
                paths += [line.split(None, 5)[-1].strip() for line in handle if "/dev/shm/" in line]
        except OSError:
            continue
    names = {path.split(" ")[0].removeprefix("/dev/shm/") for path in paths
             if path.startswith("/dev/shm/")}
    return {name for name in names if name.startswith(SEGMENTS)}


class SegmentWatch(threading.Thread):
    """The MPI segments that the processes under ``root`` (a launcher: mpiexec and the nodes)
    have had open or mapped, looked at every :attr:`PERIOD` seconds until :meth:`stop`.

    A process is under ``root`` if its parent was when it was first seen; each process of the
    machine is read once (its ``stat``), the job's at every look."""

    PERIOD = 0.05

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.ours = {root}
        self.others: set[int] = set()
        self.seen: set[str] = set()
        self._finished = threading.Event()
        self._lock = threading.Lock()
        self.start()

    def _classify(self) -> None:
        for pid in sorted(int(name) for name in os.listdir("/proc") if name.isdigit()):
            if pid in self.ours or pid in self.others:
                continue
            try:
                with open(f"/proc/{pid}/stat", "rb") as handle:
                    stat = handle.read()
            except OSError:
                continue
            parent = int(stat[stat.rfind(b")") + 2:].split()[1])
            (self.ours if parent in self.ours else self.others).add(pid)

    def look(self) -> set[str]:
        """Look now; return every segment seen so far."""
        with self._lock:
            self._classify()
            self.seen |= segments_of(sorted(self.ours))
            return set(self.seen)

    def run(self) -> None:
        while not self._finished.wait(self.PERIOD):
            self.look()

    def stop(self) -> set[str]:
        """Stop looking; every segment seen."""
        self._finished.set()
        self.join()
        return self.seen


def in_use(segment: str) -> bool:
    """Whether a process has /dev/shm/``segment`` open or mapped (another job's, running)."""
    path = f"/dev/shm/{segment}"
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == path for fd in fds):
                return True
            with open(f"/proc/{pid}/maps") as handle:
                if path in handle.read():
                    return True
        except OSError:
            continue
    return False


def assert_no_leftovers(mark: str, within: float = 3.0) -> None:
    """Fail if processes of the job marked ``mark`` are still alive ``within`` seconds from now."""
    deadline = time.monotonic() + within
    while True:
        left = processes_with_mark(mark)
        if not left:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"processes of the job survived the launcher: {', '.join(left)}")
        time.sleep(0.1)


class Launch:
    """A started ``distrcomp`` process; :meth:`wait` collects its output and checks leftovers."""

    def __init__(self, args: Sequence[str], cwd: Path, env: dict | None,
                 stdin: bytes | None = None, command: Sequence[str] = (),
                 pass_fds: Sequence[int] = ()) -> None:
        self.mark = uuid.uuid4().hex
        # the launcher decides the nodes' buffering unless the test says otherwise
        full_env = {**caller_environ(), **(env or {}), MARK: self.mark}  # a value None: unset
        full_env = {key: value for key, value in full_env.items() if value is not None}
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [*(command or (sys.executable, "-m", "distrcomp")), *args], cwd=cwd, env=full_env,
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=pass_fds,
        )
        self.segments = SegmentWatch(self.proc.pid)
        self.input = stdin
        self.read_err = b""  # what read_stderr_until took, put back in front by wait
        self.stdout = ""
        self.stderr = ""
        self.returncode: int | None = None
        self.elapsed = 0.0

    def wait(self, timeout: float = 120) -> Launch:
        try:
            out, err = self.proc.communicate(self.input, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            self.segments.stop()
            pytest.fail(f"distrcomp did not finish within {timeout} s:\n{err.decode()[-3000:]}")
        self.elapsed = time.monotonic() - self.started
        self.stdout = out.decode("utf-8", "replace")
        self.stderr = (self.read_err + err).decode("utf-8", "replace")
        self.returncode = self.proc.returncode
        assert_no_leftovers(self.mark)
        left = sorted(name for name in self.segments.stop() & mpi_segments() if not in_use(name))
        if left:
            pytest.fail(f"the job's MPI left shared memory behind in /dev/shm: {', '.join(left)}")
        return self

    def read_stderr_until(self, text: str, timeout: float = 60) -> str:
        """Read the launcher's stderr while it runs until ``text`` is in it; return what was
        read (kept for :meth:`wait`). Fails after ``timeout`` seconds or at its end."""
        fd = self.proc.stderr.fileno()
        deadline = time.monotonic() + timeout
        while text.encode() not in self.read_err:
            remaining = deadline - time.monotonic()
            chunk = b""
            if remaining > 0 and select.select([fd], [], [], remaining)[0]:
                chunk = os.read(fd, 65536)
            if not chunk:  # the time is up, or stderr ended: the job must not outlive the test
                self.proc.kill()
                self.proc.communicate()
                pytest.fail(f"no {text!r} on stderr within {timeout} s:\n{self.read_err.decode()}")
            self.read_err += chunk
        return self.read_err.decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"exit {self.returncode}\n--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-3000:]}"


def start(cwd: Path, *args: str, env: dict | None = None, stdin: bytes | None = None,
          command: Sequence[str] = (), pass_fds: Sequence[int] = ()) -> Launch:
    """Start ``distrcomp ARGS`` in ``cwd`` (marked; stdin ``stdin``, else empty), as
    ``python -m distrcomp`` unless ``command`` says how, with ``pass_fds`` inherited."""
    return Launch(args, cwd, env, stdin, command, pass_fds)


def launch(cwd: Path, *args: str, env: dict | None = None, timeout: float = 120,
           stdin: bytes | None = None, command: Sequence[str] = ()) -> Launch:
    """Run ``distrcomp ARGS`` in ``cwd`` to its end (and check that nothing is left over)."""
    return start(cwd, *args, env=env, stdin=stdin, command=command).wait(timeout)


def installed_command() -> list[str]:
    """The ``distrcomp`` command pip installed beside this Python (a test using it fails if
    there is none: the install is broken)."""
    script = Path(sys.executable).with_name("distrcomp")
    if not os.access(script, os.X_OK):
        pytest.fail(f"no distrcomp command beside {sys.executable}: is distrcomp installed?")
    return [str(script)]


def program(name: str) -> str:
    """Path of tests/launcher/programs/``name``."""
    return str(PROGRAMS / name)


def wait_for_files(paths: Sequence[Path], timeout: float = 60) -> None:
    """Block until every path exists (nodes write them when they are ready)."""
    deadline = time.monotonic() + timeout
    while not all(path.exists() for path in paths):
        if time.monotonic() > deadline:
            missing = [str(path) for path in paths if not path.exists()]
            pytest.fail(f"nodes never became ready: {missing}")
        time.sleep(0.05)



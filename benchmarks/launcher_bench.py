"""The launcher rows: ``distrcomp run`` against bare ``mpiexec`` running the same program.

Unlike the other benchmarks this one is not an MPI program: it starts whole jobs as
subprocesses from the driver and times each from start to exit. Both launchers' output goes
to a file, so neither is slowed by a terminal. Jobs run without any ``PYTHONUNBUFFERED`` of the
caller's, so each launcher's default buffering applies (into a file: buffered, for both), except
in the unbuffered relay variant, where both are asked for it (``distrcomp run -u``; mpiexec with
``PYTHONUNBUFFERED=1``). When ``distrcomp run`` does not work on this checkout,
:func:`unavailable` says why and the rows are shown as not available.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from timing import interleaved

__all__ = ["count_damaged", "relay_samples", "ring_samples", "unavailable"]

PROGRAMS = Path(__file__).resolve().parent / "programs"
PAD = "abcdefghijklmnopqrstuvwxyz0123456789"  # as in programs/chatter.py
_TAGGED = re.compile(r"\[node (\d+)[^\]]*\] (.*)")
_LINE = re.compile(r"node (\d+) line (\d+) " + PAD)
_PIECE = re.compile(r"node \d+ line \d+|" + PAD[:6] + "|" + PAD[-6:])  # part of a program line


def _distrcomp_command() -> str | None:
    beside = Path(sys.executable).with_name("distrcomp")
    return str(beside) if os.access(beside, os.X_OK) else shutil.which("distrcomp")


def _env(unbuffered: bool = False) -> dict[str, str]:
    """The jobs' environment: the caller's, with Python's output buffering as asked, and
    Open MPI's libfabric transport left out (``OMPI_MCA_btl=^ofi`` unless the caller set it):
    ``distrcomp run`` leaves it out of one-machine jobs by itself, bare ``mpiexec`` does not,
    and it costs about a second per job here; both launchers then run the same MPI setup, and
    the rows measure the launcher."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env.setdefault("OMPI_MCA_btl", "^ofi")
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(argv: Sequence[str], stdout: Path, timeout: float, unbuffered: bool = False
         ) -> tuple[int, float]:
    """Run ``argv`` with stdout to a file; return ``(exit code, wall seconds)``.

    The clock stops when the job's first process exits: the driver sleeps on a pidfd, which
    wakes it at once. (``Popen.wait(timeout)`` polls, every 50 ms once a job has run for
    0.1 s, which rounded every sample up to the next poll.) The job gets a session of its own
    so that on timeout every process of it is killed; then ``TimeoutExpired`` is raised.
    """
    with open(stdout, "wb") as out:
        start = time.perf_counter()
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env=_env(unbuffered),
        )
        pidfd = os.pidfd_open(process.pid)
        try:
            exited, _, _ = select.select([pidfd], [], [], timeout)
        finally:
            os.close(pidfd)
        if not exited:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise subprocess.TimeoutExpired(argv, timeout)
        code = process.wait()
        return code, time.perf_counter() - start


def unavailable(timeout: float = 120) -> str | None:
    """None if ``distrcomp run -n 1`` runs a program here; else the reason it does not."""
    command = _distrcomp_command()
    if command is None:
        return "no distrcomp command"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        try:
            code, _ = _run([command, "run", "-n", "1", str(PROGRAMS / "ring.py")], out, timeout)
        except subprocess.TimeoutExpired:
            return f"distrcomp run did not finish in {timeout:g} s"
        text = out.read_text(errors="replace")
        if code != 0 or "got:" not in text:
            return f"launcher not available (distrcomp run exited {code})"
    return None


def _wall(argv: Sequence[str], out: Path, timeout: float, unbuffered: bool = False
          ) -> Callable[[], float]:
    def sample() -> float:
        code, seconds = _run(argv, out, timeout, unbuffered)
        if code != 0:
            tail = out.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{' '.join(argv)} exited {code}:\n{tail}")
        return seconds

    return sample


def _argvs(mpiexec: Sequence[str], n: int, program: Path, *args: str, unbuffered: bool = False
           ) -> dict[str, list[str]]:
    options = ["-u"] if unbuffered else []
    return {
        "dc": [_distrcomp_command() or "distrcomp", "run", "-n", str(n), *options, str(program),
               *args],
        "mpiexec": [*mpiexec, "-n", str(n), sys.executable, str(program), *args],
    }


def ring_samples(mpiexec: Sequence[str], n: int, reps: int, timeout: float, warmup: int = 1
                 ) -> dict[str, list[float]]:
    """Whole-job wall seconds of an ``n``-node ring on this machine: ``distrcomp run`` and bare
    mpiexec, interleaved (both oversubscribe the cores where ``n`` exceeds them), after
    ``warmup`` unrecorded jobs of each."""
    with tempfile.TemporaryDirectory() as tmp:
        argvs = _argvs(mpiexec, n, PROGRAMS / "ring.py")
        return interleaved(
            {name: _wall(argv, Path(tmp) / name, timeout) for name, argv in argvs.items()}, reps,
            warmup,
        )


def relay_samples(
    mpiexec: Sequence[str], lines: int, reps: int, timeout: float, unbuffered: bool = False,
    warmup: int = 1,
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Wall seconds of 4 nodes printing ``lines`` lines each (after ``warmup`` unrecorded jobs
    of each launcher), and the damaged lines of the last run of each launcher (see
    :func:`count_damaged`); ``unbuffered``: every line is its own write, under both launchers."""
    with tempfile.TemporaryDirectory() as tmp:
        argvs = _argvs(mpiexec, 4, PROGRAMS / "chatter.py", str(lines), unbuffered=unbuffered)
        outs = {name: Path(tmp) / name for name in argvs}
        samples = interleaved(
            {name: _wall(argv, outs[name], timeout, unbuffered) for name, argv in argvs.items()},
            reps, warmup,
        )
        damaged = {
            name: count_damaged(outs[name].read_text(errors="replace"), 4, lines, name == "dc")
            for name in argvs
        }
    return samples, damaged


def count_damaged(text: str, n_node: int, lines: int, tagged: bool) -> int:
    """How many of the ``n_node * lines`` lines of ``chatter.py`` did not arrive intact.

    A line is intact when it is exactly as printed (under ``distrcomp run``: behind a
    ``[node i ...]`` tag naming the node that printed it) and seen once. Lines that are cut,
    merged, mistagged or repeated count as damaged, and so does every line that never arrived.
    Other output (the launcher's own messages) is ignored unless it holds a piece of a
    program line.
    """
    seen: set[tuple[int, int]] = set()
    damaged = 0
    for line in text.splitlines():
        node = None
        if tagged:
            match = _TAGGED.fullmatch(line)
            if match is None:
                damaged += _PIECE.search(line) is not None
                continue
            node, line = int(match.group(1)), match.group(2)
        found = _LINE.fullmatch(line)
        if found is None:
            damaged += tagged or _PIECE.search(line) is not None
            continue
        key = (int(found.group(1)), int(found.group(2)))
        if (node is not None and node != key[0]) or key in seen:
            damaged += 1
            continue
        seen.add(key)
    arrived = sum(1 for node, number in seen if node < n_node and number < lines)
    return damaged + n_node * lines - arrived

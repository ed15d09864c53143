"""Everything the launcher runs over ssh: the options, the wrapper MPIs start, the pre-flight.

The launcher uses the ordinary ``ssh`` client, so ``~/.ssh/config``, agents and keys work as
they do by hand; ``--ssh-config FILE`` replaces ``~/.ssh/config`` (``ssh -F FILE``). Every ssh
the launcher or the MPI starts gets :data:`OPTIONS` on its command line, which win over any
config file: never a password prompt (``BatchMode``), a bounded connect, and keepalives so that
a host that vanishes mid-job ends its session instead of hanging the job.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections import namedtuple
from collections.abc import Sequence

__all__ = [
    "CONNECT_TIMEOUT",
    "OPTIONS",
    "HostProblem",
    "check_hosts",
    "finish_parallel",
    "last_error_line",
    "run_parallel",
    "ssh_argv",
    "start_parallel",
    "wrapper_text",
    "write_wrapper",
]

CONNECT_TIMEOUT = 5  # seconds; ssh's own ConnectTimeout
OPTIONS = (
    "-o", "BatchMode=yes",
    "-o", f"ConnectTimeout={CONNECT_TIMEOUT}",
    "-o", "ServerAliveInterval=5",
    "-o", "ServerAliveCountMax=3",
)


class HostProblem(namedtuple("HostProblem", "host reason")):
    """A host that failed a check: its name as in the peers file, and why (ssh's own line).
    (Not a ``typing.NamedTuple``: see :class:`.flavor.Flavor`.)"""

    __slots__ = ()


def ssh_argv(host: str, command: str, config: str | None = None) -> list[str]:
    """``ssh [-F config] OPTIONS host command``; ``command`` is one shell string for the remote."""
    argv = ["ssh"]
    if config is not None:
        argv += ["-F", config]
    return [*argv, *OPTIONS, "--", host, command]


def write_wrapper(path: str, config: str | None = None) -> str:
    """Write an executable ``ssh [-F config] OPTIONS "$@"`` at ``path``; return ``path``.

    MPICH's hydra takes the ssh to use as one program without arguments, and Open MPI's
    ``plm_ssh_agent`` accepts a program too: both start their remote side through this.
    """
    with open(path, "w") as script:
        script.write(wrapper_text(config))
    os.chmod(path, 0o700)
    return path


def wrapper_text(config: str | None = None) -> str:
    """The shell script :func:`write_wrapper` writes (``--dry-run`` prints it)."""
    words = ["exec", "ssh"]
    if config is not None:
        words += ["-F", config]
    words += OPTIONS
    return ("#!/bin/sh\n# written by distrcomp run for one job\n"
            + " ".join(shlex.quote(word) for word in words) + ' "$@"\n')


def last_error_line(stderr: str) -> str:
    """ssh's own error: the last non-empty line of its stderr (or a placeholder)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else "(ssh printed nothing)"


def start_parallel(
    commands: dict[str, list[str]], stdin: int | None = subprocess.DEVNULL,
) -> dict[str, subprocess.Popen]:
    """Start each argv of ``commands`` (each in a session of its own, stdout discarded, stderr
    a pipe; ``stdin`` as given, or ``subprocess.PIPE``); :func:`finish_parallel` collects them."""
    return {
        key: subprocess.Popen(argv, stdin=stdin, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, errors="replace",
                              start_new_session=True)
        for key, argv in commands.items()
    }


def finish_parallel(
    procs: dict[str, subprocess.Popen], timeout: float, data: str | None = None,
) -> dict[str, tuple[int | None, str]]:
    """Wait for the commands :func:`start_parallel` started; ``{key: (exit code, stderr)}``.
    ``data`` is written to the standard input of each (started with ``subprocess.PIPE``).

    A command still running ``timeout`` seconds from now is killed and reported with exit
    code None.
    """
    deadline = time.monotonic() + timeout
    results: dict[str, tuple[int | None, str]] = {}
    try:
        for key, proc in procs.items():
            try:
                _, err = proc.communicate(data, timeout=max(0.0, deadline - time.monotonic()))
                results[key] = (proc.returncode, err)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
                results[key] = (None, err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def run_parallel(
    commands: dict[str, list[str]], timeout: float, stdin: int | None = subprocess.DEVNULL,
    data: str | None = None,
) -> dict[str, tuple[int | None, str]]:
    """Run each argv of ``commands`` at once; ``{key: (exit code, stderr)}``. ``data``, if
    given, is written to the standard input of each (``stdin`` is then ignored).

    A command still running after ``timeout`` seconds is killed and reported with exit code
    None. stdout is discarded.
    """
    procs = start_parallel(commands, subprocess.PIPE if data is not None else stdin)
    return finish_parallel(procs, timeout, data)


def check_hosts(
    hosts: Sequence[str], python: str | None, config: str | None = None,
    timeout: float | None = None, then: str | None = None, data: str | None = None,
) -> list[HostProblem]:
    """Check, in parallel, that each of ``hosts`` answers ssh and has the interpreter ``python``
    (the node wrapper runs with it; None: not checked), then run the shell command ``then``
    there, on the same connection, with ``data`` on its standard input. Returns the problems
    in the order of ``hosts``.

    A host that cannot be reached, refuses the key or does not answer is reported with ssh's
    own error line, e.g. ``ssh: connect to host 10.0.0.9 port 22: No route to host``.
    """
    if timeout is None:
        timeout = CONNECT_TIMEOUT + 10.0
    steps = []
    if python is not None:
        steps.append(f"{{ test -x {shlex.quote(python)} || "
                     f"{{ echo 'distrcomp: {python} not found on this host' >&2; exit 3; }}; }}")
    if then is not None:
        steps.append(then)
    probe = " && ".join(steps) or "true"
    results = run_parallel({host: ssh_argv(host, probe, config) for host in hosts}, timeout,
                           data=data)
    problems = []
    for host in hosts:
        code, err = results[host]
        if code == 0:
            continue
        if code is None:
            reason = f"no answer within {timeout:g} s ({last_error_line(err)})"
        else:
            reason = last_error_line(err)
        problems.append(HostProblem(host, reason))
    return problems

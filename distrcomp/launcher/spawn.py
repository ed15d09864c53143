"""Starting processes: mpiexec, by the launcher (:func:`spawn`), and the user's command, by
each node's wrapper (:func:`spawn_command`).

``os.posix_spawn`` instead of :mod:`subprocess`, whose import (with ``threading``, ``locale``
and ``re``) is ~5 ms of CPU in the launcher and in every node's wrapper. A child starts as
:class:`subprocess.Popen` would start it: SIGPIPE and SIGXFSZ back to their defaults (Python
ignores them), other handlers reset by ``exec``, the same inheritable descriptors (Python opens
its own non-inheritable); :class:`Child` reaps it and gives its ``returncode`` as ``Popen``
does.
"""

from __future__ import annotations

import os
import time
from _signal import SIGPIPE, SIGXFSZ  # signal's C part: signal.py also imports enum (~5 ms)

__all__ = ["Child", "spawn"]

_POLL = 0.005  # seconds between looks while waiting with a time limit


class Child:
    """A started process: its ``pid``, the read ends of its ``stdout`` and ``stderr`` pipes
    (descriptors; the caller closes them), and ``returncode`` once it is reaped (``-N`` if a
    signal N killed it, as :mod:`subprocess` gives it)."""

    def __init__(self, pid: int, stdout: int, stderr: int) -> None:
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """Reap the process if it has exited, without blocking; its returncode, else None."""
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: how it ended is not known
                self.returncode = 255
                return self.returncode
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float) -> int | None:
        """Block until the process exits, for at most ``timeout`` seconds (looking every 5 ms);
        its returncode, or None if it is still running then."""
        deadline = time.monotonic() + timeout
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(_POLL)
        return self.returncode


def _close_inherited() -> None:
    """Make every descriptor above 2 this process holds non-inheritable (those Python opened
    are already), so that the child gets none of them."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:  # no /proc: only Python's own descriptors, which are not inheritable
        return
    for name in names:
        fd = int(name)
        if fd > 2:
            try:
                if os.get_inheritable(fd):
                    os.set_inheritable(fd, False)
            except OSError:  # the listing's own descriptor, closed by now
                pass


def _start(argv: list[str], env: dict[str, str], stdout: int, stderr: int, stdin_devnull: bool,
           **attributes: object) -> int:
    """posix_spawn ``argv`` (``argv[0]`` a path, or a name looked up on ``PATH``) with its
    stdout and stderr on these descriptors; its pid. Raises OSError."""
    actions = [(os.POSIX_SPAWN_DUP2, stdout, 1), (os.POSIX_SPAWN_DUP2, stderr, 2)]
    if stdin_devnull:
        actions.append((os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0))
    start = os.posix_spawn if "/" in argv[0] else os.posix_spawnp
    return start(argv[0], argv, env, file_actions=actions, setsigdef=(SIGPIPE, SIGXFSZ),
                 **attributes)


def spawn(argv: list[str], env: dict[str, str], stdin_devnull: bool) -> Child:
    """Start ``argv`` (``argv[0]`` a path, or a name looked up on ``PATH``) with environment
    ``env`` in a new session, its stdout and stderr into new pipes, its stdin this process's
    or ``/dev/null``, no descriptor above 2; returns at once. Raises OSError if it cannot be
    started (no such program, not executable, no pipes)."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        _close_inherited()
        pid = _start(argv, env, out_w, err_w, stdin_devnull, setsid=True)
    except BaseException:
        for fd in (out_r, err_r):
            os.close(fd)
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
    return Child(pid, out_r, err_r)


def spawn_command(argv: list[str], env: dict[str, str], stdout: int, stderr: int,
                  stdin_devnull: bool, process_group: int) -> Child:
    """Start ``argv`` as :func:`spawn` does, but with its stdout and stderr on the descriptors
    given (the caller keeps and closes its own), in process group ``process_group`` (0: a new
    one that it leads), and with every descriptor this process has that is inheritable (a
    node's command needs MPI's). Its :attr:`Child.stdout` and :attr:`Child.stderr` are -1.
    Returns at once; raises OSError if it cannot be started."""
    pid = _start(argv, env, stdout, stderr, stdin_devnull, setpgroup=process_group)
    return Child(pid, -1, -1)


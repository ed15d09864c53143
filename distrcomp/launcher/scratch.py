"""The launcher's private scratch directory (the relay's Unix socket, the hostfile), which
never outlives the launcher, even one killed by SIGKILL.

:func:`make` starts a janitor, then creates the directory: a forked process, in a session of
its own, that holds the read end of a pipe whose write end only the launcher has, and is told
the directory's path on it before the directory exists. However the launcher ends, the pipe
then reads end-of-file and the janitor removes the directory. :meth:`Scratch.remove`
is the launcher's own, orderly removal; the janitor, finding nothing left, just exits.
"""

from __future__ import annotations

import os

__all__ = ["Scratch", "make"]


class Scratch:
    """A scratch directory (``path``) and the janitor that removes it if the launcher dies."""

    def __init__(self, path: str, janitor: int, watch: int) -> None:
        self.path = path
        self._janitor = janitor  # pid, 0 if none could be started
        self._watch = watch  # the pipe's write end, -1 if none

    def remove(self) -> None:
        """Remove the directory and what it holds (files only); then let the janitor go and
        wait for it (it exits at once). Raises OSError if the directory cannot be removed."""
        try:
            _remove(self.path)
        finally:
            if self._watch >= 0:
                os.close(self._watch)
                self._watch = -1
            if self._janitor:
                os.waitpid(self._janitor, 0)
                self._janitor = 0


def make() -> Scratch:
    """A new private directory (mode 0700) under ``$TMPDIR`` (else /tmp), named
    ``distrcomp-<hex>``, watched by a janitor (see the module). Where ``$TMPDIR`` cannot hold it,
    ``tempfile`` chooses, as ``tempfile.TemporaryDirectory`` does. Raises OSError if no
    directory can be made; a janitor that cannot be started is done without.

    ``tempfile`` only then: with ``shutil`` and ``random`` it is 2.9 ms of the launcher's
    start-up, which delays every node.
    """
    janitor, watch = _start_janitor()
    base = os.environ.get("TMPDIR") or "/tmp"
    while True:
        path = os.path.join(base, f"distrcomp-{os.urandom(6).hex()}")
        _announce(watch, path)  # before it exists: a launcher killed now leaves nothing
        try:
            os.mkdir(path, 0o700)
            break
        except FileExistsError:
            continue
        except OSError:  # missing, not a directory, not writable: tempfile's search instead
            import tempfile

            path = tempfile.mkdtemp(prefix="distrcomp-")
            _announce(watch, path)
            break
    return Scratch(path, janitor, watch)


def _start_janitor() -> tuple[int, int]:
    """Fork the janitor; its pid and the write end of its pipe (0 and -1 if it cannot be)."""
    try:
        watch_r, watch_w = os.pipe()  # not inheritable: mpiexec and the nodes never hold it
    except OSError:
        return 0, -1
    try:
        janitor = os.fork()
    except OSError:
        os.close(watch_r)
        os.close(watch_w)
        return 0, -1
    if janitor == 0:
        _janitor(watch_r)  # never returns
    os.close(watch_r)
    return janitor, watch_w


def _announce(watch: int, path: str) -> None:
    """Tell the janitor the directory's path (its last line is the one it removes)."""
    if watch >= 0:
        os.write(watch, os.fsencode(path) + b"\n")  # far below PIPE_BUF: one atomic write


def _janitor(watch: int) -> None:
    """The janitor's whole life: read paths from ``watch`` until end-of-file, remove the last
    one, exit."""
    code = 0
    try:
        import _signal

        _signal.set_wakeup_fd(-1)  # the launcher's wake-up socket is not the janitor's
        for signum in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGCHLD):
            _signal.signal(signum, _signal.SIG_DFL)
        os.setsid()  # out of the launcher's process group: a kill of that group spares it
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)  # holds none of the launcher's pipes open
        for name in os.listdir("/proc/self/fd"):  # (not closerange up to the limit: slow)
            if int(name) > 2 and int(name) != watch:
                try:
                    os.close(int(name))
                except OSError:  # the directory listdir itself read
                    pass
        told = b""
        while True:
            try:
                data = os.read(watch, 4096)
            except InterruptedError:
                continue
            if not data:
                break
            told += data
        lines = told.split(b"\n")[:-1]  # a path whose write was cut short is not one
        if lines:
            try:
                _remove(os.fsdecode(lines[-1]))
            except FileNotFoundError:  # the launcher removed it, or never made it
                pass
    except BaseException:  # noqa: BLE001 - the janitor must never return into the launcher
        code = 1
    finally:
        os._exit(code)


def _remove(path: str) -> None:
    for name in os.listdir(path):  # files only: the socket and the hostfile
        try:
            os.unlink(os.path.join(path, name))
        except FileNotFoundError:
            pass
    os.rmdir(path)

"""The process table, read from ``/proc``: process groups, caught signals, a job's processes,
the files processes hold open or mapped.

Linux only; elsewhere every query answers "nothing found", so callers fall back to signalling
the processes they know by pid.
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the launcher's start-up)
if TYPE_CHECKING:
    from collections.abc import Iterator
del TYPE_CHECKING

__all__ = ["any_left", "catches", "children", "files_in_use", "group_members",
           "processes_with_env", "send_signal", "start_time"]

_PROC = "/proc"


def _pids() -> Iterator[int]:
    try:
        names = os.listdir(_PROC)
    except OSError:
        return
    for name in names:
        if name.isdigit():
            yield int(name)


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (which may hold spaces and parens)."""
    try:
        with open(f"{_PROC}/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2:].decode("ascii", "replace").split()


_EXEC_RETRIES = 20  # 1 ms apart: how long a process may show no environment (see _carries)
_EMPTY_LOOKS = 2  # looks at an unchanged, empty environment in place after which it is empty for good
_PF_EXITING = 0x00000004  # task flags, from the kernel's include/linux/sched.h
_PF_KTHREAD = 0x00200000


def _environment_place(pid: int) -> tuple[str, str] | None:
    """Where ``pid``'s environment lies (``env_start``, ``env_end``: fields 50 and 51 of
    /proc/PID/stat; ``("0", "0")`` before Linux 3.5, which shows neither), or None when there is
    no environment to wait for: the process is gone, exiting (a zombie too) or a kernel thread."""
    fields = _stat_fields(pid)
    if fields is None or int(fields[6]) & (_PF_EXITING | _PF_KTHREAD):  # flags, field 9
        return None
    return (fields[47], fields[48]) if len(fields) > 48 else ("0", "0")


def _carries(pid: int, needle: bytes) -> bool:
    """Whether the environment ``pid`` started with (/proc/PID/environ) has the entry
    ``needle``. Raises OSError if it cannot be read.

    A process in the middle of an exec shows an empty environment for a moment: its new
    program's memory is in place and its environment not yet (``env_end`` still 0), then is
    being written (``env_start`` equals ``env_end`` for a few microseconds). So an empty
    environment is read again, 1 ms apart, up to ``_EXEC_RETRIES`` times, unless
    :func:`_environment_place` says there is none to wait for, or the environment is in place,
    empty and unchanged ``_EMPTY_LOOKS`` looks in a row (``env -i``: empty for good; before,
    such a process was read 21 times in every scan).
    """
    previous, unchanged = None, 0
    for attempt in range(_EXEC_RETRIES + 1):
        with open(f"{_PROC}/{pid}/environ", "rb") as handle:
            data = handle.read()
        if data:
            return needle in data.split(b"\0")
        place = _environment_place(pid)
        if place is None:
            return False
        empty_in_place = place[1] != "0" and place[0] == place[1]
        unchanged = unchanged + 1 if empty_in_place and place == previous else 0
        if unchanged >= _EMPTY_LOOKS or attempt == _EXEC_RETRIES:
            return False
        previous = place
        time.sleep(0.001)
    return False


def group_members(pgid: int, exclude: tuple[int, ...] = ()) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``, except the pids in ``exclude``."""
    members = []
    for pid in _pids():
        if pid in exclude:
            continue
        fields = _stat_fields(pid)
        # fields[0] is the state, fields[2] the process group
        if fields and len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            members.append(pid)
    return members


def children(parent: int, exclude: tuple[int, ...] = ()) -> list[int]:
    """Live (non-zombie) children of process ``parent``, except the pids in ``exclude``."""
    found = []
    for pid in _pids():
        if pid in exclude:
            continue
        fields = _stat_fields(pid)
        # fields[0] is the state, fields[1] the parent
        if fields and len(fields) > 1 and fields[1] == str(parent) and fields[0] != "Z":
            found.append(pid)
    return found


def catches(pid: int, signum: int) -> bool:
    """True if process ``pid`` has a handler installed for ``signum`` (SigCgt in its status)."""
    try:
        with open(f"{_PROC}/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except (OSError, ValueError, IndexError):
        return False
    return False


def _netns(pid: int | str) -> tuple[int, int] | None:
    try:
        st = os.stat(f"{_PROC}/{pid}/ns/net")
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def processes_with_env(name: str, value: str, exclude: tuple[int, ...] = ()) -> list[tuple[int, str]]:
    """``(pid, command name)`` of this user's live processes whose environment has ``name=value``.

    Only processes in this process's network namespace: one in another (a container used as a
    peer host) belongs to that host, where its own node wrapper and MPI daemon clean up.
    """
    needle = f"{name}={value}".encode()
    found = []
    here = _netns("self")
    for pid in _pids():
        if pid in exclude:
            continue
        try:  # the environment first: most processes are not the job's, and that is one read
            if not _carries(pid, needle):
                continue
            with open(f"{_PROC}/{pid}/comm", "rb") as handle:
                comm = handle.read().decode("utf-8", "replace").strip()
        except OSError:
            continue
        if here is not None and _netns(pid) != here:
            continue
        fields = _stat_fields(pid)
        if fields and fields[0] != "Z":
            found.append((pid, comm))
    return found


def start_time(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks after boot (field 22 of /proc/PID/stat);
    None if it is gone (or there is no /proc)."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def any_left(pgid: int, name: str, value: str, exclude: tuple[int, ...] = (), since: int = 0,
             parent: int = 0) -> bool:
    """Whether a live process other than those in ``exclude`` is in process group ``pgid``, is
    a child of ``parent`` (if not 0) or carries ``name=value`` in its environment (and is in
    this network namespace, as for :func:`processes_with_env`): one pass over the process table.

    ``since`` (a :func:`start_time`): processes started before it cannot carry ``name=value``
    (it is the mark of a command that started then, and only what the command started has
    it), so their environments are not read.
    """
    needle = f"{name}={value}".encode()
    here = _netns("self")
    for pid in _pids():
        if pid in exclude:
            continue
        fields = _stat_fields(pid)
        if not fields or len(fields) < 20 or fields[0] == "Z":
            continue
        if fields[2] == str(pgid) or (parent and fields[1] == str(parent)):
            return True
        if fields[2] == "0" or int(fields[19]) < since:  # a kernel thread has no environment
            continue
        try:
            if not _carries(pid, needle):
                continue
        except OSError:
            continue
        if here is None or _netns(pid) == here:
            return True
    return False


def send_signal(pid: int, signum: int) -> bool:
    """Send ``signum`` to ``pid``; False (no error) if the process is already gone or not ours."""
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def files_in_use(files: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """Those of ``files`` (``(st_dev, st_ino)`` pairs) that a live process has open or mapped.

    Each process's descriptors are read before its mappings: a process that opens a file, maps
    it and then closes it cannot be missed by one read in that order. Processes whose /proc
    entries cannot be read (another user's, unless root) are not looked at.
    """
    found: set[tuple[int, int]] = set()
    for pid in _pids():
        found |= _open_files(pid, files) | _mapped_files(pid, files)
        if found == files:
            break
    return found


def _open_files(pid: int, files: set[tuple[int, int]]) -> set[tuple[int, int]]:
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


def _mapped_files(pid: int, files: set[tuple[int, int]]) -> set[tuple[int, int]]:
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

"""The node wrapper as its command's subreaper (Linux): whatever the command starts stays below it.

A process whose parent dies is normally adopted by init, out of reach: a daemon that detaches
(``setsid``, a double fork) and clears its environment could outlive the job unseen. After
:func:`enable`, such orphans among this process's descendants are adopted by this process
instead (``prctl(PR_SET_CHILD_SUBREAPER)``), so they are its children, found by
:func:`distrcomp.launcher.procs.children`, and :func:`reap` collects those that exited.
"""

from __future__ import annotations

import os

__all__ = ["enable", "reap"]

_PR_SET_CHILD_SUBREAPER = 36  # from the kernel's include/uapi/linux/prctl.h (Linux 3.4)


def enable() -> bool:
    """Make this process the subreaper of its descendants; False where the system has no such
    thing (not Linux, no libc ``prctl``, Linux before 3.4). Not inherited by children."""
    try:
        import ctypes  # only here: ~3 ms of every node wrapper's start on Linux

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (ImportError, OSError, AttributeError):
        return False
    return prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def reap() -> None:
    """Collect every child of this process that has exited (adopted orphans among them), without
    waiting. Call it only once the children whose status matters have been waited for."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return

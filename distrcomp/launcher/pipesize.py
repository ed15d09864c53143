"""Pipe sizing, shared by the node wrapper (its command's output) and file staging (tar streams)."""

from __future__ import annotations

__all__ = ["widen"]


def widen(fd: int, size: int = 1 << 20) -> None:
    """Ask for a pipe buffer of ``size`` bytes (Linux; the default is 64 KiB), so that a writer
    that comes in bursts waits less for its reader. Best effort: where the system does not
    allow it, the pipe keeps its size."""
    import fcntl

    if hasattr(fcntl, "F_SETPIPE_SZ"):  # Linux, Python 3.10 and later
        try:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
        except OSError:
            pass  # above the system's limit for this user: the default size still works

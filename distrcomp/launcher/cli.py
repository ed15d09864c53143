"""argparse front end of the ``distrcomp`` command (placeholder until the launcher lands)."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``distrcomp`` console script; returns the exit code."""
    sys.stderr.write("distrcomp: the launcher is not implemented yet\n")
    return 2

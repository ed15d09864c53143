"""argparse front end of the ``distrcomp`` command (placeholder until the launcher lands)."""

from __future__ import annotations

import sys
from typing import List, Optional

__all__ = ["main"]


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``distrcomp`` console script; returns the exit code."""
    sys.stderr.write("distrcomp: the launcher is not implemented yet\n")
    return 2

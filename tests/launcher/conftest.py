"""Fixtures for the CLI tests (see jobtools.py): run ``distrcomp`` as a real subprocess."""

from __future__ import annotations

from pathlib import Path

import pytest
from jobtools import PROGRAMS, Launch


@pytest.fixture
def start(tmp_path):
    """``start(*args, env=None)``: start ``distrcomp ARGS`` in ``tmp_path``; returns a Launch."""

    def _start(*args: str, env: dict | None = None, cwd: Path | None = None) -> Launch:
        return Launch(args, cwd or tmp_path, env)

    return _start


@pytest.fixture
def launch(start):
    """``launch(*args, env=None, timeout=120)``: run ``distrcomp ARGS`` to its end."""

    def _launch(*args: str, env: dict | None = None, timeout: float = 120,
                cwd: Path | None = None) -> Launch:
        return start(*args, env=env, cwd=cwd).wait(timeout)

    return _launch


@pytest.fixture
def program():
    """``program(name)``: path of tests/launcher/programs/<name> as a string."""
    return lambda name: str(PROGRAMS / name)

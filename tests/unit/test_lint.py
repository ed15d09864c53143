"""The code base stays ruff clean (rules and settings in pyproject.toml)."""

import subprocess
import sys

from conftest import ROOT


def test_ruff_check_is_clean():
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--output-format", "concise", str(ROOT)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr

"""Two venvs, one for each MPI, installed editable from one checkout, each run its own compiled
engine (issue 24, item 18): the builds are named by MPI ABI (``p2p.mpich.*``,
``p2p.openmpi.*``), so installing one never replaces the other's.

The other venv is named by ``DISTRCOMP_OTHER_VENV`` (``.ci/run`` sets it, for its second MPI, to
the venv of its first); without it the test skips.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, compiled_built, require_compiled

CHECK = (
    "import mpi4py\n"
    "mpi4py.rc.initialize = False\n"
    "from distrcomp import _build, p2p\n"
    "from mpi4py import MPI\n"
    "print(_build.mpi_abi(MPI), p2p.compiled(), p2p.__file__)\n"
)


def _engine(python: str) -> list[str]:
    """``[abi, compiled, file]`` of the engine ``python`` loads (warnings are errors)."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("DISTRCOMP_PURE_PYTHON", "VIRTUAL_ENV", "PYTHONPATH")}
    done = subprocess.run([python, "-W", "error::RuntimeWarning", "-c", CHECK], cwd="/",
                          capture_output=True, text=True, timeout=120, env=env, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_each_venv_runs_its_own_compiled_engine_from_one_checkout():
    other = os.environ.get("DISTRCOMP_OTHER_VENV")
    if not other:
        pytest.skip("DISTRCOMP_OTHER_VENV names no second venv installed from this checkout")
    if not compiled_built():
        require_compiled("the compiled engine")
    mine = _engine(sys.executable)
    theirs = _engine(str(Path(other) / "bin" / "python"))
    assert mine[0] != theirs[0], "both venvs have the same MPI ABI"
    assert mine[1:2] == theirs[1:2] == ["True"], (mine, theirs)
    # the same source file of the same checkout, two binaries beside it
    assert Path(mine[2]).parent == Path(theirs[2]).parent == ROOT / "distrcomp", (mine, theirs)
    names = sorted(path.name.split(".")[1] for path in (ROOT / "distrcomp").glob("p2p.*.so"))
    assert {mine[0], theirs[0]} <= set(names), names

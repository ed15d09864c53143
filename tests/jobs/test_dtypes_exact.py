"""Every array arrives with exactly its own dtype between two nodes, whatever was sent before
it, under several hash seeds, with each build of the engine (the program:
tests/jobs/programs/dtype_roundtrip.py; the wire format alone: tests/unit/test_wire_dtypes.py)."""

from __future__ import annotations

import pytest
from conftest import TESTS, compiled_built, require_compiled, run_job

PROGRAM = TESTS / "jobs" / "programs" / "dtype_roundtrip.py"


@pytest.mark.parametrize("engine", ["compiled", "python"])
@pytest.mark.parametrize("seed", ["0", "1", "2", "3"])
def test_arrays_arrive_with_exactly_their_dtype_under_every_hash_seed(seed, engine):
    if engine == "compiled" and not compiled_built():
        require_compiled("the compiled distrcomp.p2p")
    env = {"PYTHONHASHSEED": seed, "DISTRCOMP_PURE_PYTHON": "1" if engine == "python" else ""}
    done = run_job(2, PROGRAM, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    assert "checked" in done.stdout, done.stdout

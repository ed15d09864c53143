"""Programs that start more MPI processes (``MPI_Comm_spawn``) run under ``distrcomp run``."""

from __future__ import annotations

import pytest
from jobtools import launch, tagged_lines

POOL = """\
from mpi4py.futures import MPIPoolExecutor

if __name__ == "__main__":
    with MPIPoolExecutor(max_workers=1) as pool:
        print("squares", list(pool.map(pow, range(6), [2] * 6)))
"""


@pytest.mark.parametrize("n", [1, 2])
def test_mpi_pool_executor_spawns_its_workers(tmp_path, n):
    # issue 24, item 11: MPICH's hydra killed every spawn (exit 137, "duplicate setting:
    # genv-prop") because the launcher forwarded its variables with -genvlist
    (tmp_path / "pool.py").write_text(POOL)
    done = launch(tmp_path, "run", "-n", str(n), "pool.py", timeout=180)
    assert done.returncode == 0, done
    assert sorted(tagged_lines(done.stdout)) == [
        (node, "localhost", "squares [0, 1, 4, 9, 16, 25]") for node in range(n)], done

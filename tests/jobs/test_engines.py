"""Jobs whose nodes run different engines: the compiled one (making its own MPI calls or not)
and the Python one speak one protocol, so a job where some nodes lack the extensions (or set
DISTRCOMP_PURE_PYTHON=1 or DISTRCOMP_MPICALLS=0) works."""

from __future__ import annotations

import textwrap

import pytest
from conftest import extension_built, mpicalls_built, require_compiled, run_job

PROGRAM = """
    import os
    from mpi4py import MPI

    if MPI.COMM_WORLD.Get_rank() % 2:  # odd nodes: another engine, chosen before first use
        os.environ[os.environ["ODD_NODES_SET"]] = os.environ["ODD_NODES_TO"]
    import numpy as np
    import distrcomp as dc
    from distrcomp import p2p

    right, left = (dc.node_id + 1) % dc.n_node, (dc.node_id - 1) % dc.n_node

    def made(step, node):
        # payload arrays (sent again from the second step on: the compiled send's own path;
        # the third with the second's head: its data alone, REPEAT),
        # a small array, bare pickles, a pickle with an array out of band
        return [np.full(300_000, step + node, np.float64), np.full((300, 700), step, np.float32),
                np.full((300, 700), -step, np.float32),
                np.arange(5) + step, {"step": step, "from": node}, {"w": np.full(5000, node, np.int32)}]

    for step in range(3):
        for obj in made(step, dc.node_id):
            dc.send(right, obj)
        for expected in made(step, left):
            got = dc.recv(left)
            if isinstance(expected, dict):
                assert got.keys() == expected.keys()
                for key in got:
                    assert np.array_equal(got[key], expected[key]), (step, key)
            else:
                assert got.dtype == expected.dtype and np.array_equal(got, expected), step
    total = dc.allreduce(np.full(1 << 20, dc.node_id + 1.0))
    assert (total == dc.n_node * (dc.n_node + 1) / 2).all()
    engines = dc.allgather("mpicalls" if p2p.mpi_calls() else "compiled" if p2p.compiled() else "python")
    if dc.node_id == 0:
        print(" ".join(engines))
"""


@pytest.mark.parametrize("odd", ["python", "compiled"])
@pytest.mark.parametrize("n", [2, 4])
def test_nodes_of_different_engines_exchange_every_kind_of_message(tmp_path, n, odd):
    if not extension_built():
        require_compiled("distrcomp._hotpath")
    even = "mpicalls" if mpicalls_built() else "compiled"
    if even == odd:
        require_compiled("distrcomp._mpicalls_<abi>")
    program = tmp_path / "mixed.py"
    program.write_text(textwrap.dedent(PROGRAM))
    odd_env = ("DISTRCOMP_PURE_PYTHON", "1") if odd == "python" else ("DISTRCOMP_MPICALLS", "0")
    env = {"DISTRCOMP_PURE_PYTHON": "", "DISTRCOMP_MPICALLS": "", "ODD_NODES_SET": odd_env[0],
           "ODD_NODES_TO": odd_env[1]}
    done = run_job(n, program, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [even, odd] * (n // 2)

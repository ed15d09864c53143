"""Jobs whose nodes run different builds of the engine: the compiled one and the same source as
plain Python speak one protocol, so a job where some nodes lack the compiled build (or set
DISTRCOMP_PURE_PYTHON=1) works."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from conftest import compiled_built, require_compiled, run_job

PROGRAM = """
    import os
    from mpi4py import MPI

    if MPI.COMM_WORLD.Get_rank() % 2:  # odd nodes: the plain-Python build, chosen before first use
        os.environ["DISTRCOMP_PURE_PYTHON"] = "1"
    import numpy as np
    import distrcomp as dc
    from distrcomp import p2p

    right, left = (dc.node_id + 1) % dc.n_node, (dc.node_id - 1) % dc.n_node

    def made(step, node):
        # payload arrays (from the second step on with the head of the last array sent to that
        # node: their data alone, REPEAT), small arrays (the same), bare pickles, a pickle with
        # an array out of band
        return [np.full(300_000, step + node, np.float64), np.full((300, 700), step, np.float32),
                np.full((300, 700), -step, np.float32), np.arange(5) + step, np.arange(5) - step,
                {"step": step, "from": node}, {"w": np.full(5000, node, np.int32)}]

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
    engines = dc.allgather("compiled" if p2p.compiled() else "python")
    if dc.node_id == 0:
        print(" ".join(engines))
"""


@pytest.mark.parametrize("n", [2, 4])
def test_nodes_of_different_builds_exchange_every_kind_of_message(tmp_path, n):
    if not compiled_built():
        require_compiled("the compiled distrcomp.p2p")
    program = tmp_path / "mixed.py"
    program.write_text(textwrap.dedent(PROGRAM))
    done = run_job(n, program, env={"DISTRCOMP_PURE_PYTHON": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["compiled", "python"] * (n // 2)


@pytest.mark.parametrize("pure", ["0", "1"])
def test_the_engine_runs_where_cython_is_not_installed(tmp_path, pure):
    # Cython is only needed to build the compiled engine: without it, p2p.py's body runs with
    # distrcomp._shadow standing in for the `cython` module (also when it then hands the import
    # over to the compiled build), so _shadow must have every name the body uses.
    prog = tmp_path / "ring.py"
    prog.write_text(textwrap.dedent("""
        import os, sys
        sys.modules["cython"] = None  # `import cython` raises ImportError, as where it is missing
        import distrcomp as dc
        dc.send((dc.node_id + 1) % dc.n_node, dc.node_id)
        got = dc.recv((dc.node_id - 1) % dc.n_node)
        os.write(1, f"got {got}\\n".encode())  # one write: bare mpiexec may mix two ranks' pieces
    """))
    done = run_job(2, prog, env={"DISTRCOMP_PURE_PYTHON": pure}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == ["got 0", "got 1"], done.stdout


STAMP_PROGRAM = """
    import os, shutil, sys, warnings
    from mpi4py import MPI
    import distrcomp
    from distrcomp._build import compiled_twin, mpi_abi, stamp_path

    here = os.path.dirname(distrcomp.__file__)
    place = sys.argv[1]  # a copy of the source and of its binary, as pip unpacks a wheel
    binary = next(name for name in os.listdir(here)
                  if name.startswith(f"p2p.{mpi_abi(MPI)}.") and name.endswith(".so"))
    for name in (binary, binary + ".source", "p2p.py"):
        shutil.copyfile(os.path.join(here, name), os.path.join(place, name))
    source = os.path.join(place, "p2p.py")
    later = os.path.getmtime(os.path.join(place, binary)) + 60
    os.utime(source, (later, later))  # the source unpacked after the binary
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        print("same source:", compiled_twin("distrcomp.p2p", source, MPI) is not None)
    with open(source, "a") as handle:
        handle.write("# edited\\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        print("edited source:", compiled_twin("distrcomp.p2p", source, MPI) is not None)
    print("warned:", "was not built from this p2p.py" in str(caught[0].message))
"""


def test_the_compiled_build_is_used_whatever_the_files_times_and_never_for_another_source(tmp_path):
    # pip gives a wheel's files the time they are unpacked, in any order: p2p.py unpacked after
    # its binary made a non-editable install run the plain-Python engine ("p2p.py changed after
    # p2p.mpich...so was built from it"). The build now says which source it was built from.
    if not compiled_built():
        require_compiled("the compiled distrcomp.p2p")
    program = tmp_path / "stamp.py"
    program.write_text(textwrap.dedent(STAMP_PROGRAM))
    place = tmp_path / "installed"
    place.mkdir()
    done = subprocess.run([sys.executable, str(program), str(place)], check=False, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "DISTRCOMP_PURE_PYTHON": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["same source: True", "edited source: False", "warned: True"], done

"""Whole jobs as subprocesses under real mpiexec: start-up, uncaught errors, exit."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import compiled_built, run_job


def script(tmp_path, body: str, name: str = "prog.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def test_import_does_not_initialise_mpi_and_first_use_does():
    code = (
        "import sys, distrcomp, distrcomp.launcher.node\n"
        "assert 'mpi4py.MPI' not in sys.modules, 'import initialised MPI'\n"
        "assert 'numpy' not in sys.modules, 'import loaded numpy: slow launcher start'\n"
        "print(distrcomp.node_id, distrcomp.n_node)\n"
        "assert 'mpi4py.MPI' in sys.modules\n"
    )
    done = subprocess.run(check=False, args=[sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "1"]  # singleton: plain python is one node


def test_the_node_wrapper_imports_only_what_it_needs():
    # Started once per node, under -S (see launcher/command.py): every module it loads costs
    # start-up time on every node of every job.
    code = (
        "import sys, distrcomp.launcher.node\n"
        "heavy = {'typing', 'numpy', 'mpi4py', 'distrcomp.world', 'distrcomp.launcher.staging',\n"
        "         'subprocess', 'json'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    done = subprocess.run(check=False, args=[sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("pure", ["0", "1"], ids=["compiled-if-built", "python"])
def test_singleton_send_recv_and_collectives(tmp_path, pure):
    # The first call of the program is a send: it initialises MPI, and distrcomp.send and recv
    # become the engine's methods (their signatures and documentation stay the same).
    prog = script(tmp_path, """
        import inspect, numpy as np, distrcomp as dc
        dc.send(0, np.arange(5))
        assert dc.recv(0).tolist() == [0, 1, 2, 3, 4]
        dc.send(dest=0, obj="by keyword", tag=2)
        assert dc.recv(src=0, tag=2, timeout=None) == "by keyword"
        dc.send(0, {"default": "tag"})
        assert dc.recv(0, 0) == {"default": "tag"}
        for call in (lambda: dc.send(0), lambda: dc.recv(), lambda: dc.send(0, 1, 2, 3)):
            try:
                call()
            except TypeError:
                pass
            else:
                raise AssertionError("no TypeError")
        def params(function):
            return [(p.name, p.default) for p in inspect.signature(function).parameters.values()]
        assert params(dc.send) == [("dest", inspect.Parameter.empty), ("obj", inspect.Parameter.empty), ("tag", 0)]
        assert params(dc.recv) == [("src", inspect.Parameter.empty), ("tag", -1), ("timeout", None)]
        assert dc.send.__doc__.count("Send ``obj`` to node ``dest``.") == 1
        assert dc.allreduce(3) == 3 and dc.bcast("x") == "x" and dc.gather(1) == [1]
        import importlib
        dc = importlib.reload(dc)
        dc.send(0, [1, 2])
        assert dc.recv(0) == [1, 2] and dc.send.__doc__.count("Send ``obj`` to node ``dest``.") == 1
        from distrcomp import p2p
        print("ok", "compiled" if p2p.compiled() else "python")
    """)
    env = {**os.environ, "DISTRCOMP_PURE_PYTHON": pure}
    done = subprocess.run(check=False, args=[sys.executable, str(prog)], capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    word, engine = done.stdout.split()
    assert word == "ok"
    assert engine == ("python" if pure == "1" or not compiled_built() else "compiled")


def test_a_local_runs_private_directory_is_under_tmpdir_and_removed(tmp_path):
    # (what a local run imports: tests/launcher/test_run.py)
    prog = script(tmp_path, "import os\nprint('scratch:', os.listdir(os.environ['TMPDIR']))\n")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = subprocess.run([sys.executable, "-m", "distrcomp", "run", "-n", "2", str(prog)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
                          env={**os.environ, "TMPDIR": str(scratch)})
    assert done.returncode == 0, done.stderr
    # the job's private directory (its Unix socket) was under $TMPDIR, and is gone (Open MPI
    # keeps a session directory of its own there)
    listed = [ast.literal_eval(line.split("scratch: ", 1)[1])
              for line in done.stdout.splitlines() if "scratch: " in line]
    ours = [[name for name in names if name.startswith("distrcomp-")] for names in listed]
    assert len(ours) == 2 and all(len(names) == 1 for names in ours), listed
    assert re.fullmatch(r"distrcomp-[0-9a-f]{12}", ours[0][0]), listed
    assert not [path for path in scratch.iterdir() if path.name.startswith("distrcomp-")]


def test_a_missing_tmpdir_does_not_stop_a_run(tmp_path):
    # the job's scratch directory then goes where tempfile puts it (as before it was made directly)
    prog = script(tmp_path, "print('ran')\n")
    env = {**os.environ, "TMPDIR": str(tmp_path / "missing")}
    done = subprocess.run([sys.executable, "-m", "distrcomp", "run", "-n", "2", str(prog)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
                          env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("ran") == 2, done.stdout


def _uncompiled_copy(tmp_path) -> Path:
    """The package as installed where no C compiler was found: without the compiled build of
    distrcomp.p2p. Put its parent first on PYTHONPATH."""
    import shutil

    import distrcomp

    copy = tmp_path / "site" / "distrcomp"
    shutil.copytree(Path(distrcomp.__file__).parent, copy,
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    return copy


def test_without_the_compiled_build_the_source_runs_as_plain_python(tmp_path):
    copy = _uncompiled_copy(tmp_path)
    prog = script(tmp_path, """
        import numpy as np, distrcomp as dc
        from distrcomp import p2p
        assert dc.__file__.startswith(COPY), dc.__file__
        assert p2p.__file__.endswith("p2p.py") and not p2p.compiled()
        right, left = (dc.node_id + 1) % dc.n_node, (dc.node_id - 1) % dc.n_node
        dc.send(right, np.arange(3.0))
        dc.send(right, {"from": dc.node_id})
        assert dc.recv(left).tolist() == [0.0, 1.0, 2.0] and dc.recv(left) == {"from": left}
        print("ok")
    """.replace("COPY", repr(str(copy))))
    env = {"PYTHONPATH": str(copy.parent), "DISTRCOMP_PURE_PYTHON": ""}
    done = run_job(2, prog, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("ok") == 2, done.stdout  # mpiexec may join the two nodes' lines


@pytest.mark.parametrize("abi", ["mpich", "openmpi"])
def test_a_compiled_build_that_does_not_load_is_said_and_the_source_runs(tmp_path, abi):
    # A binary under the loaded MPI's ABI name that cannot be loaded (here: not a binary at all;
    # in life: built against another MPI of that ABI, whose guard refuses it) is named in a
    # warning, and the same source runs as plain Python. The other ABI's name is never loaded.
    import sysconfig

    copy = _uncompiled_copy(tmp_path)
    (copy / f"p2p.{abi}{sysconfig.get_config_var('EXT_SUFFIX')}").write_bytes(b"not a binary\n")
    code = ("import mpi4py\nmpi4py.rc.initialize = False\n"
            "from mpi4py import MPI\nfrom distrcomp import p2p\nfrom distrcomp._build import mpi_abi\n"
            "print(mpi_abi(MPI), p2p.compiled(), p2p.__file__.endswith('p2p.py'))\n")
    env = {**os.environ, "PYTHONPATH": str(copy.parent)}
    env.pop("DISTRCOMP_PURE_PYTHON", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env=env, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    loaded, compiled, source = done.stdout.split()
    assert (compiled, source) == ("False", "True")
    if loaded == abi:
        assert f"p2p.{abi}" in done.stderr and "does not load" in done.stderr, done.stderr
        assert "running p2p.py as plain Python instead" in done.stderr
    else:
        assert "does not load" not in done.stderr, done.stderr


def test_the_launcher_of_a_copy_without_compiled_parts_runs_the_python_wrapper(tmp_path):
    copy = _uncompiled_copy(tmp_path)
    prog = script(tmp_path, """
        import os, distrcomp as dc
        assert dc.__file__.startswith(COPY), dc.__file__
        print(open(f"/proc/{os.getppid()}/comm").read().strip(), "is the parent of", dc.node_id)
    """.replace("COPY", repr(str(copy))))
    env = {**os.environ, "PYTHONPATH": str(copy.parent)}
    env.pop("DISTRCOMP_PURE_PYTHON", None)
    # cwd: not the checkout, which `python -m` would put first on the path
    done = subprocess.run([sys.executable, "-m", "distrcomp", "run", "-n", "2", str(prog)], check=False,
                          env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    parents = sorted(line.split("] ", 1)[1] for line in done.stdout.splitlines())
    python = os.path.basename(sys.executable)[:15]  # the relay: a fork of `python -S -c BOOT`
    assert parents == [f"{python} is the parent of {node}" for node in (0, 1)], done.stdout


@pytest.mark.parametrize("n", [2, 4])
def test_uncaught_exception_aborts_the_whole_job_promptly(tmp_path, n):
    prog = script(tmp_path, """
        import distrcomp as dc
        if dc.node_id == 1:
            raise ValueError("boom on node one")
        dc.recv(1)  # would wait forever without the abort
    """)
    start = time.monotonic()
    done = run_job(n, prog, timeout=60)
    elapsed = time.monotonic() - start
    assert done.returncode != 0
    assert elapsed < 30, f"abort took {elapsed:.1f} s"
    assert "Traceback (most recent call last)" in done.stderr
    assert "ValueError: boom on node one" in done.stderr
    assert f"node 1 of {n} raised ValueError; aborting every node" in done.stderr


@pytest.mark.parametrize(("n", "how"), [(2, "sys.exit(3)"), (2, "exit(3)"), (2, "quit(3)"),
                                        (4, "sys.exit(3)")])
def test_a_nonzero_exit_while_the_others_wait_aborts_the_job_with_its_status(tmp_path, n, how):
    # the exit handler waited for every node to reach exit while the others waited in
    # barrier() for node 1: the job hung forever
    prog = script(tmp_path, f"""
        import sys, distrcomp as dc
        if dc.node_id == 1:
            {how}
        dc.barrier()
        dc.recv(1)
    """)
    done = run_job(n, prog, timeout=60)
    assert done.returncode != 0, done.stderr
    assert f"node 1 of {n} exited with status 3; aborting every node with code 3" in done.stderr
    assert "MPI_Abort" in done.stderr or "MPI_ABORT" in done.stderr, done.stderr


def test_a_caught_exit_or_a_zero_exit_does_not_abort(tmp_path):
    prog = script(tmp_path, """
        import sys, distrcomp as dc
        def argv_check():
            try:
                sys.exit(2)  # as argparse does, caught
            except SystemExit:
                pass
        argv_check()
        try:
            sys.exit(5)
        except SystemExit:
            pass
        dc.barrier()
        sys.stdout.write(f"node {dc.node_id} done\\n")  # one write: mpiexec mixes pieces
        sys.stdout.flush()
        sys.exit(0)
    """)
    done = run_job(2, prog, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "aborting" not in done.stderr
    assert sorted(done.stdout.split("\n")) == ["", "node 0 done", "node 1 done"]


def test_abort_can_be_turned_off(tmp_path):
    prog = script(tmp_path, """
        import time, distrcomp as dc
        if dc.node_id == 1:
            raise ValueError("boom")
        time.sleep(1)
        print("node 0 finished its work", flush=True)
    """)
    done = run_job(2, prog, timeout=60, env={"DISTRCOMP_ABORT_ON_ERROR": "0"})
    assert "ValueError: boom" in done.stderr
    assert "aborting every node" not in done.stderr
    assert "node 0 finished its work" in done.stdout
    assert done.returncode != 0


def test_message_never_received_is_reported_and_the_job_ends(tmp_path):
    prog = script(tmp_path, """
        import numpy as np, distrcomp as dc
        if dc.node_id == 0:
            dc.send(1, np.zeros(8 << 20))  # large: needs node 1 to take it
            dc.send(1, "small", tag=4)
        print("done", dc.node_id, flush=True)
    """)
    done = run_job(2, prog, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "node 1 is exiting with 2 message(s) never received: 1 from node 0 (tag 0), 1 from node 0 (tag 4)" in done.stderr
    assert sorted(done.stdout.split("\n")) == ["", "done 0", "done 1"]


def test_sends_pending_at_exit_are_waited_for_a_bounded_time_then_named(tmp_path):
    prog = script(tmp_path, """
        import time, numpy as np, distrcomp as dc
        if dc.node_id == 0:
            # a strided array is copied, so send returns at once and the copy stays pending
            dc.send(1, np.zeros(16 << 20)[::2])
            dc.send(1, np.zeros(16 << 20)[::2])
        else:
            time.sleep(6)  # busy elsewhere, not receiving, past node 0's exit wait
    """)
    done = run_job(2, prog, timeout=60, env={"DISTRCOMP_EXIT_TIMEOUT": "1"})
    assert done.returncode == 0, done.stderr
    assert "node 0 is exiting with sends still pending after 1 s (2 to node 1)" in done.stderr


def test_traceback_survives_the_abort_every_time(tmp_path):
    """MPI_Abort kills every process, and mpiexec drops output still in a pipe: the node must
    let its traceback be read first. (Before the fix about 1 run in 8 lost part of it.)"""
    prog = script(tmp_path, """
        import distrcomp as dc
        if dc.node_id == 0:
            raise ValueError("boom on node zero")
        dc.recv(0)
    """)
    for attempt in range(15):
        done = run_job(2, prog, timeout=60)
        assert done.returncode != 0
        assert "ValueError: boom on node zero" in done.stderr, f"run {attempt}: {done.stderr!r}"

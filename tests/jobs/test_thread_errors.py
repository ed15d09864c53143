"""Threads in whole jobs: an uncaught exception in any thread ends the job as one in the main
thread does, and calls from other threads are refused when MPI was initialised below
MPI_THREAD_MULTIPLE. (Sending and receiving from threads: tests/mpi/test_threads.py.)"""

from __future__ import annotations

import textwrap

import pytest
from conftest import run_job


def script(tmp_path, body: str):
    path = tmp_path / "prog.py"
    path.write_text(textwrap.dedent(body))
    return path


@pytest.mark.parametrize("engine", ["compiled", "python"])
@pytest.mark.parametrize("n", [2, 4])
def test_an_uncaught_exception_in_a_thread_aborts_the_whole_job(tmp_path, n, engine):
    # An exception in a thread never reaches sys.excepthook: the job waited forever.
    prog = script(tmp_path, """
        import threading
        import distrcomp as dc

        def work():
            if dc.node_id == 1:
                raise ValueError("boom in a thread")

        threading.Thread(target=work, name="worker").start()
        dc.recv(1)  # would wait forever without the abort
    """)
    env = {"DISTRCOMP_PURE_PYTHON": "1" if engine == "python" else ""}
    done = run_job(n, prog, timeout=120, env=env)  # TimeoutExpired: the job did not end
    assert done.returncode != 0
    assert "ValueError: boom in a thread" in done.stderr
    assert f"node 1 of {n} raised ValueError in thread 'worker'; aborting every node" in done.stderr


def test_a_system_exit_in_a_thread_ends_only_that_thread(tmp_path):
    prog = script(tmp_path, """
        import sys, threading
        import distrcomp as dc

        thread = threading.Thread(target=sys.exit, args=(3,))
        thread.start()
        thread.join()
        dc.send((dc.node_id + 1) % dc.n_node, "still here")
        print(dc.recv((dc.node_id - 1) % dc.n_node))
    """)
    done = run_job(2, prog, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("still here") == 2  # two ranks' lines may interleave under mpiexec


def test_calls_from_another_thread_are_refused_below_mpi_thread_multiple(tmp_path):
    prog = script(tmp_path, """
        import threading
        import mpi4py

        mpi4py.rc.thread_level = "serialized"
        import distrcomp as dc

        dc.send(dc.node_id, "from the main thread")
        assert dc.recv(dc.node_id) == "from the main thread"
        errors = []

        def work():
            try:
                dc.send(dc.node_id, "from a thread")
            except dc.DistrCompError as exc:
                errors.append(str(exc))

        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        print(errors)
    """)
    done = run_job(2, prog, timeout=120)
    assert done.returncode == 0, done.stderr
    for line in done.stdout.splitlines():
        assert "send: node " in line and "MPI_THREAD_SERIALIZED" in line, line
        assert "calls from several threads need MPI_THREAD_MULTIPLE" in line, line
    assert len(done.stdout.splitlines()) == 2


def test_sys_exit_in_a_thread_after_start_up_does_not_abort_the_ending_program(tmp_path):
    # distrcomp's own sys.exit (installed at start-up) remembers a failing exit for the exit
    # handler; called in a thread it ends only that thread (threading catches it and goes on),
    # so the program still exits 0.
    prog = script(tmp_path, """
        import sys, threading
        import distrcomp as dc

        dc.barrier()  # distrcomp starts up: sys.exit is now its own
        thread = threading.Thread(target=sys.exit, args=(3,))
        thread.start()
        thread.join()
        dc.barrier()
        print("ended normally")
    """)
    done = run_job(2, prog, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("ended normally") == 2


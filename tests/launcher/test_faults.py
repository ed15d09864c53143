"""Jobs that fail, time out or are interrupted: the job ends promptly, the summary names the
node, the exit code follows the rules, and (checked by every launch) no process survives."""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
from jobtools import launch, mpi_segments, processes_with_mark, program, start, wait_for_files

FAULT_BOUND = 30  # generous: "within a few seconds" on a loaded 2-core machine


def summary_rows(stderr: str) -> dict[int, str]:
    """``node -> result`` from the failure table of the summary."""
    rows = {}
    for line in stderr.splitlines():
        match = re.match(r"^\s+(\d+)\s+localhost\s+(.+)$", line)
        if match:
            rows[int(match.group(1))] = match.group(2)
    return rows


def test_nonzero_exit_ends_the_job(tmp_path):
    done = launch(tmp_path, "run", "-n", "3", program("exits.py"), "3", timeout=FAULT_BOUND * 2)
    assert done.returncode == 3, done
    assert "distrcomp: node 1 (localhost) failed: exit code 3" in done.stderr, done
    rows = summary_rows(done.stderr)
    assert rows[1].startswith("exit code 3")
    assert set(rows) == {0, 1, 2}  # the others were stopped (or killed by MPI)
    assert "| node 1: something went wrong" in done.stderr  # last stderr lines
    assert done.elapsed < FAULT_BOUND


def test_sys_exit_while_the_others_wait_in_barrier_ends_the_job_with_its_status(tmp_path):
    # it hung forever, then reported every node as killed by SIGTERM once killed from outside
    code = ("import sys, distrcomp as dc\n"
            "if dc.node_id == 1:\n    sys.exit(3)\n"
            "dc.barrier()\n")
    done = launch(tmp_path, "run", "-n", "3", "--", sys.executable, "-c", code,
                  timeout=FAULT_BOUND * 2)
    assert done.returncode == 3, done
    assert "distrcomp: node 1 (localhost) failed: called MPI_Abort with error code 3" \
        in done.stderr, done
    assert done.elapsed < FAULT_BOUND


@pytest.mark.parametrize("n", [2, 4])
def test_a_bare_raise_systemexit_while_the_others_wait_ends_the_job_with_its_status(tmp_path, n):
    # Python tells an exit handler nothing of the status: the exiting node's exit handshake
    # then waited for the others, which waited in barrier() for it, and the job hung forever
    (tmp_path / "prog.py").write_text(
        "import distrcomp as dc\n"
        "def give_up():\n    raise SystemExit(3)\n"
        "if dc.node_id == 1:\n    give_up()\n"
        "dc.barrier()\n")
    done = launch(tmp_path, "run", "-n", str(n), "prog.py", timeout=FAULT_BOUND * 2)
    assert done.returncode == 3, done
    assert f"node 1 of {n} exited with status 3; aborting every node with code 3" in done.stderr, done
    assert "distrcomp: node 1 (localhost) failed: called MPI_Abort with error code 3" \
        in done.stderr, done
    assert done.elapsed < FAULT_BOUND


def test_a_script_runs_as_python_runs_it_and_its_traceback_is_its_own(tmp_path):
    # distrcomp run starts a script through distrcomp.runscript (see the test above): what the
    # script sees of itself, and its traceback, are those of python prog.py
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "helper.py").write_text("WHERE = 'beside the script'\n")
    (tmp_path / "lib" / "prog.py").write_text(
        "import os, pickle, sys, __main__\n"
        "import helper\n"
        "class Point:\n    pass\n"
        "names = sorted(k for k in globals() if not k.startswith('__'))\n"
        "assert pickle.loads(pickle.dumps(Point())).__class__ is Point\n"
        "line = (f'{__name__} {__file__} {sys.argv} {helper.WHERE} {sys.path[0] == os.path.dirname(os.path.abspath(__file__))} '\n"
        "        f'{__main__.__dict__ is globals()} {names}\\n')\n"
        "os.write(1, line.encode())\n"
        "def fails():\n    raise ValueError('as python shows it')\n"
        "fails()\n")
    done = launch(tmp_path, "run", "-n", "1", "--no-tag", "lib/prog.py", "a", "b",
                  timeout=FAULT_BOUND * 2)
    assert done.returncode == 1, done
    assert done.stdout == ("__main__ lib/prog.py ['lib/prog.py', 'a', 'b'] beside the script True "
                           "True ['Point', 'helper', 'os', 'pickle', 'sys']\n"), done
    assert done.stderr.startswith(
        "Traceback (most recent call last):\n"
        '  File "lib/prog.py", line 12, in <module>\n'
        "    fails()\n"
        '  File "lib/prog.py", line 11, in fails\n'), done
    assert "ValueError: as python shows it\n" in done.stderr, done


def test_a_script_run_by_another_python_runs_as_given(tmp_path):
    # the runner needs distrcomp, which another interpreter (here the one this environment was
    # made from) may not have: such a script is not run through it
    other = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    if os.path.dirname(other) == os.path.dirname(os.path.abspath(sys.executable)):
        pytest.skip("no other Python than this environment's")
    (tmp_path / "plain.py").write_text("import sys\nprint('plain', sys.argv[1:])\n")
    done = launch(tmp_path, "run", "-n", "1", "--no-tag", "--", other, "plain.py", "a",
                  timeout=FAULT_BOUND * 2)
    assert done.returncode == 0, done
    assert done.stdout == "plain ['a']\n", done


def test_exception_calls_abort_and_names_the_node(tmp_path):
    done = launch(tmp_path, "run", "-n", "3", program("raises.py"), timeout=FAULT_BOUND * 2)
    assert done.returncode == 1, done  # MPI_Abort's error code
    assert "distrcomp: node 2 (localhost) failed: called MPI_Abort with error code 1" in done.stderr
    # the traceback written just before MPI killed the node is not lost
    assert "[node 2 \u00b7 localhost] ValueError: node 2 gives up" in done.stderr, done
    assert done.elapsed < FAULT_BOUND


def test_output_written_before_the_node_wrapper_dies_arrives(tmp_path):
    # The command writes straight into its connection to the launcher: a line written just
    # before the node's wrapper is killed still arrives (it used to sit in a pipe that nobody
    # read any more), and the node is reported lost.
    code = ("import os, signal, time; print('written before', flush=True); "
            "os.kill(os.getppid(), signal.SIGKILL); time.sleep(60)")
    done = launch(tmp_path, "run", "-n", "1", "--", sys.executable, "-c", code,
                  timeout=FAULT_BOUND * 2)
    assert done.returncode != 0, done
    assert done.stdout == "[node 0 \u00b7 localhost] written before\n", done
    assert "node 0 (localhost) failed: lost" in done.stderr, done
    assert done.elapsed < FAULT_BOUND


def test_sigkill_of_one_node(tmp_path):
    job = start(tmp_path, "run", "-n", "3", program("blocked.py"), str(tmp_path))
    ready = [tmp_path / f"ready-{node}" for node in range(3)]
    wait_for_files(ready)
    os.kill(int(ready[1].read_text()), signal.SIGKILL)
    killed_at = time.monotonic()
    done = job.wait(timeout=FAULT_BOUND * 2)
    assert time.monotonic() - killed_at < FAULT_BOUND
    assert done.returncode == 128 + signal.SIGKILL, done
    assert "distrcomp: node 1 (localhost) failed: killed by SIGKILL" in done.stderr, done
    assert summary_rows(done.stderr)[1] == "killed by SIGKILL"


@pytest.mark.parametrize("when", ["running", "starting"])
def test_sigkill_of_the_launcher_leaves_no_scratch_directory(tmp_path, when):
    # the launcher's $TMPDIR/distrcomp-<hex> (its Unix socket, the hostfile) stayed behind
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    job = start(tmp_path, "run", "-n", "2", program("blocked.py"), str(tmp_path),
                env={"TMPDIR": str(tmp)})
    if when == "running":
        wait_for_files([tmp_path / f"ready-{node}" for node in range(2)])
    else:
        deadline = time.monotonic() + 60
        while not list(tmp.glob("distrcomp-*")) and time.monotonic() < deadline:
            time.sleep(0.001)
    job.proc.kill()
    job.proc.communicate(timeout=FAULT_BOUND)
    deadline = time.monotonic() + FAULT_BOUND
    while (processes_with_mark(job.mark) or list(tmp.glob("distrcomp-*"))) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not processes_with_mark(job.mark), "the nodes outlived their launcher"
    assert not list(tmp.glob("distrcomp-*")), "the scratch directory outlived the job"


def test_timeout_prints_stacks_and_exits_124(tmp_path):
    done = launch(tmp_path, "run", "-n", "2", "--timeout", "3", program("blocked.py"), str(tmp_path),
                  timeout=FAULT_BOUND * 2)
    assert done.returncode == 124, done
    assert re.search(r"time limit of 3 s exceeded; still running: node 0 \(localhost\), "
                     r"node 1 \(localhost\)", done.stderr), done
    source = Path(program("blocked.py")).read_text().splitlines()
    recv_line = source.index("dc.recv(right)") + 1
    for node in (0, 1):
        # the node's report (distrcomp.diag): the call it is blocked in, then its stack (the
        # program's line is the innermost Python frame where the engine is compiled), tagged
        tag = f"[node {node} \u00b7 localhost]"
        assert f"{tag} blocked in recv(from {1 - node})" in done.stderr, done
        assert re.search(rf"{re.escape(tag)}\s+File .*blocked\.py\", line {recv_line}, in <module>",
                         done.stderr), done
    assert "nodes still running then: 0, 1" in done.stderr
    assert done.elapsed < 3 + FAULT_BOUND


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_to_the_launcher_stops_every_node(tmp_path, signum):
    job = start(tmp_path, "run", "-n", "3", program("blocked.py"), str(tmp_path))
    wait_for_files([tmp_path / f"ready-{node}" for node in range(3)])
    job.proc.send_signal(signum)
    sent_at = time.monotonic()
    done = job.wait(timeout=FAULT_BOUND * 2)
    assert time.monotonic() - sent_at < FAULT_BOUND
    assert done.returncode == 128 + signum, done
    name = signal.Signals(signum).name
    assert f"distrcomp: interrupted by {name}; every node was stopped" in done.stderr, done
    assert set(summary_rows(done.stderr)) == {0, 1, 2}


def test_shared_memory_of_a_stopped_job_is_removed_and_another_jobs_is_kept(tmp_path):
    # Every launch checks that its MPI's segments are gone afterwards (jobtools); this one also
    # checks that the launcher of a job that timed out leaves those of a job still running.
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    running = start(tmp_path / "a", "run", "-n", "2", program("blocked.py"), str(tmp_path / "a"))
    try:
        wait_for_files([tmp_path / "a" / f"ready-{node}" for node in range(2)])
        kept = running.segments.look()
        if not kept:
            pytest.skip("this MPI keeps no shared memory in /dev/shm")
        done = launch(tmp_path / "b", "run", "-n", "2", "--timeout", "2", program("blocked.py"),
                      str(tmp_path / "b"), timeout=FAULT_BOUND * 2)
        assert done.returncode == 124, done
        assert kept <= mpi_segments(), "a running job's shared memory was removed"
    finally:
        running.proc.send_signal(signal.SIGTERM)
        running.wait(timeout=FAULT_BOUND * 2)
    assert not kept & mpi_segments()


def test_non_python_failure(tmp_path):
    done = launch(tmp_path, "run", "-n", "2", "--", "sh", "-c",
                  'r=${PMI_RANK:-$OMPI_COMM_WORLD_RANK}; '
                  'if [ "$r" = 1 ]; then echo bye >&2; exit 5; fi; sleep 60',
                  timeout=FAULT_BOUND * 2)
    assert done.returncode == 5, done
    assert "node 1 (localhost) failed: exit code 5" in done.stderr
    assert "killed by SIGTERM (stopped by distrcomp)" in summary_rows(done.stderr)[0]
    assert done.elapsed < FAULT_BOUND


def test_background_children_do_not_survive(tmp_path):
    # the command leaves a sleeping child behind: it must not outlive the node
    done = launch(tmp_path, "run", "-n", "2", "--", "sh", "-c", "sleep 300 & echo started")
    assert done.returncode == 0, done
    assert done.elapsed < FAULT_BOUND


def test_a_child_in_a_session_of_its_own_does_not_survive_or_hold_up_the_job(tmp_path):
    # setsid takes the child out of the node's process group, and it keeps MPICH's descriptors,
    # so MPICH's proxy waits for it (bare mpiexec then waits the 300 s): the node wrapper finds
    # it by the mark the command's processes carry, stops it, and the job ends as it should
    done = launch(tmp_path, "run", "-n", "2", "--", "sh", "-c",
                  "setsid sleep 300 </dev/null >/dev/null 2>&1 & echo started",
                  timeout=FAULT_BOUND * 2)
    assert done.returncode == 0, done
    assert done.stdout.count("started") == 2, done
    assert done.elapsed < FAULT_BOUND, done


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) ``sleep``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return cmdline.startswith(b"sleep\0") and not stat[stat.rfind(b")") + 2:].startswith(b"Z")


def test_a_daemon_that_detaches_and_clears_its_environment_does_not_outlive_the_job(tmp_path):
    # setsid, double fork, no environment, no inherited descriptor: neither the process group
    # nor the environment's mark finds it; it used to outlive the job. The node wrapper is its
    # subreaper, so it is adopted there and stopped with the command.
    pids = tmp_path / "pids"
    pids.mkdir()
    done = launch(tmp_path, "run", "-n", "2", program("daemon.py"), str(pids),
                  timeout=FAULT_BOUND * 2)
    daemons = [int(path.read_text()) for path in pids.glob("daemon-*[0-9]")]
    try:
        assert done.returncode == 0, done
        assert done.stdout.count("daemon started") == 2, done
        assert len(daemons) == 2, daemons
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in daemons) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in daemons if _alive(pid)], "a daemon outlived the job"
    finally:
        for pid in daemons:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_relay_channel_is_closed_to_others_and_secret_stays_off_command_lines(tmp_path):
    job = start(tmp_path, "run", "-n", "2", program("blocked.py"), str(tmp_path))
    wait_for_files([tmp_path / f"ready-{node}" for node in range(2)])
    environments, command_lines = [], []
    for pid in processes_with_mark(job.mark):
        pid = pid.split()[0]
        try:
            environments.append(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
            command_lines.append(Path(f"/proc/{pid}/cmdline").read_bytes())
        except OSError:
            continue
    address = next(entry.split(b"=", 1)[1].decode() for env in environments for entry in env
                   if entry.startswith(b"DISTRCOMP_RELAY="))
    secret = next(entry.split(b"=", 1)[1] for env in environments for entry in env
                  if entry.startswith(b"DISTRCOMP_RELAY_SECRET="))
    assert all(secret not in line for line in command_lines)
    # a one-machine job listens on a Unix socket in a directory only its user can enter
    assert address.startswith("unix:"), address
    path = Path(address[len("unix:"):])
    assert path.parent.stat().st_mode & 0o777 == 0o700
    # every node has connected, so the launcher no longer listens at all
    with pytest.raises((FileNotFoundError, ConnectionRefusedError)), \
            socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(path))
    job.proc.send_signal(signal.SIGTERM)
    assert job.wait(timeout=FAULT_BOUND * 2).returncode == 143

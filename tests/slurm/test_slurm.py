"""``distrcomp run`` on a real Slurm cluster (``slurmhosts.py``), with whichever MPI this venv has:
inside ``salloc`` and ``sbatch``, from the login node with ``--slurm``, ``--files`` by sbcast,
a node killed, Ctrl-C (while running and while pending), ``-n`` beyond the allocation.

Each test checks only what its own job made: its output, its exit code, the processes in the
test cluster's namespaces, the steps of the test cluster's own slurmctld.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from cluster.conftest import DistrcompRun
from cluster.hosts import netns_processes
from cluster.test_faults_across import WAITER, _await_ready, _user_process
from tagged import tagged_lines

ROOT = Path(__file__).resolve().parents[2]
RING = str(ROOT / "examples" / "ring.py")
PROGRAMS = ROOT / "tests" / "cluster" / "programs"
RUN = ("python", "-m", "distrcomp", "run", "-x", "UCX_TLS")


def _ring_ok(stdout: str, n: int = 3) -> None:
    lines = sorted(tagged_lines(stdout))
    assert [(node, host) for node, host, _ in lines] == [(i, f"dcsl-h{i + 1}") for i in range(n)]
    for node, _, text in lines:
        assert text == f"node {node} of {n} got: 'hello from node {(node - 1) % n}'"


def _job_id(stderr: str) -> str:
    match = re.search(r"Granted job allocation (\d+)", stderr)
    assert match, stderr
    return match.group(1)


def test_salloc_runs_one_node_per_task_tagged_with_slurm_node_names(on_login, no_leftovers):
    job = on_login("salloc", "-N3", *RUN, RING)
    assert job.returncode == 0, job
    _ring_ok(job.stdout)


_ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
          "BOOT_FAIL", "DEADLINE", "PREEMPTED"}  # Slurm's job states that are final


def _job_end(slurm, job_id: str, timeout: float = 180) -> tuple[str, str]:
    """``(JobState, ExitCode)`` of batch job ``job_id`` once it has ended (cancelled, and the
    test failed, after ``timeout`` seconds). ``sbatch --wait`` polls every 2 to 10 s; scontrol
    shows the end as soon as it comes."""
    deadline = time.monotonic() + timeout
    while True:
        shown = slurm.run(["scontrol", "-o", "show", "job", job_id], timeout=30).stdout
        state, code = re.search(r"\bJobState=(\S+)", shown), re.search(r"\bExitCode=(\S+)", shown)
        assert state and code, shown
        if state.group(1) in _ENDED:
            return state.group(1), code.group(1)
        if time.monotonic() > deadline:
            slurm.run(["scancel", job_id], timeout=30)
            pytest.fail(f"batch job {job_id} had not ended after {timeout} s: {shown}")
        time.sleep(0.2)


def test_sbatch_script_runs_the_job_on_the_allocation(slurm, on_login, tmp_path, no_leftovers):
    (tmp_path / "job.sh").write_text(f"#!/bin/sh\nexec {' '.join(RUN)} {RING}\n")
    submitted = on_login("sbatch", "--parsable", "-N3", "-o", str(tmp_path / "out.txt"),
                         "-e", str(tmp_path / "err.txt"), str(tmp_path / "job.sh"))
    assert submitted.returncode == 0, submitted
    ended = _job_end(slurm, submitted.stdout.strip().split(";")[0])
    assert ended == ("COMPLETED", "0:0"), (ended, (tmp_path / "err.txt").read_text())
    _ring_ok((tmp_path / "out.txt").read_text())


def test_slurm_option_gets_an_allocation_from_the_login_node(on_login, no_leftovers):
    job = on_login("python", "-m", "distrcomp", "run", "--slurm", "-N 3", "-x", "UCX_TLS", RING)
    assert job.returncode == 0, job
    _ring_ok(job.stdout)
    assert "Relinquishing job allocation" in job.stderr, job


def test_n_takes_the_first_tasks_in_slurm_order_and_too_many_is_exit_2(on_login):
    job = on_login("salloc", "-N2", "-n4", *RUN, "--dry-run", "-n", "3", RING)
    assert job.returncode == 0, job
    hostfile = re.search(r"# hostfile from Slurm allocation \d+ \(dcsl-h\[1-2\], 4 tasks\).*\n"
                         r".*<<'EOF'\n((?:.+\n)+?)EOF\n", job.stdout)
    assert hostfile, job
    assert hostfile.group(1).split() in (["dcsl-h1:2", "dcsl-h2:1"],
                                         ["dcsl-h1", "slots=2", "dcsl-h2", "slots=1"]), job
    job = on_login("salloc", "-N2", "-n4", *RUN, "-n", "5", RING)
    assert job.returncode == 2, job
    assert re.search(r"distrcomp: run: -n 5: the Slurm allocation \d+ \(dcsl-h\[1-2\], 4 tasks\) "
                     r"has only 4", job.stderr), job


def test_killed_node_ends_the_job_naming_node_and_host(slurm, on_login, no_leftovers):
    job = on_login("salloc", "-N3", *RUN, "--timeout", "150", WAITER, start=True)
    _await_ready(job, 3)
    os.kill(_user_process(slurm, "dcsl-h2").pid, signal.SIGKILL)
    killed_at = time.monotonic()
    job.wait(120)
    assert time.monotonic() - killed_at < 30, job
    assert job.returncode == 128 + signal.SIGKILL, job
    assert "distrcomp: node 1 (dcsl-h2) failed: killed by SIGKILL" in job.stderr, job


def test_ctrl_c_stops_the_job_and_leaves_no_step(slurm, on_login, no_leftovers):
    job = on_login("python", "-m", "distrcomp", "run", "--slurm", "-N3", "-x", "UCX_TLS",
                   WAITER, start=True)
    _await_ready(job, 3)
    job.proc.send_signal(signal.SIGINT)
    job.wait(120)
    assert job.returncode == 130, job
    job_id = _job_id(job.stderr)
    assert not [line for line in slurm.steps() if line.startswith(f"{job_id}.")], job


def test_ctrl_c_inside_salloc_stops_the_job_and_leaves_no_step(slurm, on_login, no_leftovers):
    # In a terminal, Ctrl-C reaches `distrcomp run` (salloc's command) itself.
    job = on_login("salloc", "-N3", *RUN, WAITER, start=True)
    _await_ready(job, 3)
    inner = [p for p in netns_processes(slurm.launcher_ns)
             if p.ppid == job.proc.pid and "distrcomp" in p.argv]
    assert len(inner) == 1, netns_processes(slurm.launcher_ns)
    os.kill(inner[0].pid, signal.SIGINT)
    job.wait(120)
    assert job.returncode == 130, job
    assert "distrcomp: interrupted by SIGINT; every node was stopped" in job.stderr, job
    job_id = _job_id(job.stderr)
    assert not [line for line in slurm.steps() if line.startswith(f"{job_id}.")], job


def test_slurm_option_from_a_terminal_and_ctrl_c_there(slurm, login_env, tmp_path,
                                                       no_leftovers):
    # `script` gives the command a terminal: salloc needs it in the same session, and makes
    # the inner run the terminal's foreground job, which the Ctrl-C typed there (^C) reaches.
    command = shlex.join([*RUN[:4], "--slurm", "-N3", "-x", "UCX_TLS", WAITER])
    proc = subprocess.Popen(slurm.in_launcher(["script", "-qefc", command, "/dev/null"]),
                            env=login_env, cwd=tmp_path, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        seen = b""
        deadline = time.monotonic() + 90
        while seen.count(b" ready ") < 3 and time.monotonic() < deadline:
            chunk = os.read(proc.stdout.fileno(), 4096)
            assert chunk, seen
            seen += chunk
        assert seen.count(b" ready ") == 3, seen
        proc.stdin.write(b"\x03")
        proc.stdin.flush()
        out = seen + proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = out.decode(errors="replace")
    assert proc.returncode == 130, text
    assert "distrcomp: interrupted by SIGINT; every node was stopped" in text, text
    job_id = _job_id(text)
    assert not [line for line in slurm.steps() if line.startswith(f"{job_id}.")], text


def test_ctrl_c_while_pending_withdraws_the_request(slurm, on_login, no_leftovers):
    holder = on_login("salloc", "--no-shell", "-N3", "--exclusive")
    assert holder.returncode == 0, holder
    held = _job_id(holder.stderr)
    try:
        job = on_login("python", "-m", "distrcomp", "run", "--slurm", "-N 3", RING, start=True)
        seen = ""
        while "queued and waiting for resources" not in seen:
            line = job.proc.stderr.readline()
            assert line, seen
            seen += line
        job.proc.send_signal(signal.SIGINT)
        job.wait(60)
        job.stderr = seen + job.stderr
        assert job.returncode == 130, job
        pending = re.search(r"Pending job allocation (\d+)", job.stderr).group(1)
        queue = slurm.run(["squeue", "-h", "-o", "%i %T"], timeout=30).stdout.split("\n")
        assert not [line for line in queue if line.startswith(f"{pending} ")], (queue, job)
    finally:
        slurm.run(["scancel", held], timeout=30)


def test_files_reach_every_node_by_sbcast_and_are_removed(slurm, on_login, tmp_path,
                                                          no_leftovers):
    (tmp_path / "data.bin").write_bytes(os.urandom(100_000))
    (tmp_path / "listdir.py").write_text((PROGRAMS / "listdir.py").read_text())
    job = on_login("salloc", "-N3", *RUN, "--files", "listdir.py,data.bin", "--",
                   "python", "listdir.py")
    assert job.returncode == 0, job
    lines = tagged_lines(job.stdout)
    for node in range(3):
        mine = sorted(text for n, _, text in lines if n == node)
        cwd = mine[0].split()
        assert cwd[0] == "cwd" and cwd[1].startswith("/tmp/distrcomp-") and cwd[2] == "0o700"
        assert [line.split()[1] for line in mine[1:]] == ["data.bin", "listdir.py"], job
    # every node has its own /tmp: the per-job directory is gone from each
    for host in slurm.hosts:
        assert not list((slurm.tmp / host.name / "tmp").glob("distrcomp-*")), host.name


def test_dry_run_shows_the_slurm_and_mpi_command_lines(on_login):
    job = on_login("python", "-m", "distrcomp", "run", "--dry-run", "--slurm", "-N 3 -t 5",
                   "-n", "2", RING)
    assert job.returncode == 0, job
    assert re.search(r"^salloc -N 3 -t 5 -- \S+ -m distrcomp run --dry-run -n 2 \S+ring\.py$",
                     job.stdout, re.MULTILINE), job


def test_timeout_group_and_output_dir_hold_under_slurm(on_login, tmp_path, no_leftovers):
    job = on_login("salloc", "-N3", *RUN, "--timeout", "8", "--group", "--output-dir", "logs",
                   WAITER)
    assert job.returncode == 124, job
    assert re.search(r"time limit of 8 s exceeded; still running: node 0 \(dcsl-h1\), "
                     r"node 1 \(dcsl-h2\), node 2 \(dcsl-h3\)", job.stderr), job
    # --group: each node's output as one block, in node order, stacks included
    headers = re.findall(r"^-+\(Node (\d) (\S+) return\)-+$", job.stdout + job.stderr,
                         re.MULTILINE)
    assert headers[:3] == [("0", "dcsl-h1"), ("1", "dcsl-h2"), ("2", "dcsl-h3")], job
    assert job.stderr.count('waiter.py", line') >= 3, job
    for node in range(3):
        assert f"ready dcsl-h{node + 1}" in (tmp_path / "logs" / f"node-{node}.out").read_text()


SLURM_PROGRAMS = Path(__file__).resolve().parent / "programs"


def test_no_process_of_the_job_holds_the_relay_secret(on_login, no_leftovers):
    # inside an allocation the nodes prove themselves with MUNGE: the secret is in no
    # environment Slurm carries (mpiexec's, srun's, the MPI's proxies', the wrappers')
    job = on_login("salloc", "-N3", *RUN, str(SLURM_PROGRAMS / "job_environ.py"))
    assert job.returncode == 0, job
    lines = {text.split(" ", 1)[0]: text.split()[1:] for _, _, text in tagged_lines(job.stdout)}
    seen = set(lines["seen"])
    assert {"python", "srun"} <= seen, job  # the scan found the job's processes
    assert seen & {"mpiexec", "mpiexec.hydra", "mpirun", "prterun", "prte"}, job
    assert lines["secret"] == [], job


def test_the_relay_refuses_a_forged_replayed_or_foreign_munge_credential(slurm, on_login):
    # the relay's handshake as distrcomp run does it on the login node; credentials made on a
    # node by its munged. (Not inside a job: its relay stops listening once every node is in.)
    address = "10.77.0.1:47123"
    server = on_login("python", str(SLURM_PROGRAMS / "relay_once.py"), address, "4", start=True)
    try:
        client = on_login("srun", "-N1", "-w", "dcsl-h2", "python",
                          str(SLURM_PROGRAMS / "forge.py"), address, timeout=90)
    finally:
        server.wait(60)
    assert client.returncode == 0, (client, server)
    assert client.stdout.split("\n") == ["right accepted", "forged refused", "replayed refused",
                                          "nobody refused", ""], (client, server)
    assert server.stdout.split("\n") == [
        "accepted 0 0", "refused credential for another challenge",
        # munged refuses a credential it has decoded before, whatever it carries
        f"refused unmunge on {socket.gethostname()}: credential replayed",
        "refused credential of uid 65534, not the launcher's 0", ""], (client, server)


def test_a_node_that_cannot_make_a_munge_credential_never_starts_and_says_why(
        slurm, login_env, tmp_path, no_leftovers):
    # a munge that fails on every node (as without munged): each wrapper says so, naming its
    # node and host; the command never starts
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "munge").write_text("#!/bin/sh\necho 'munge: Error: Failed to access munged' >&2\n"
                                "exit 1\n")
    (fake / "munge").chmod(0o755)
    env = {**login_env, "PATH": f"{fake}:{login_env['PATH']}"}
    job = DistrcompRun(slurm.in_launcher(["salloc", "-N3", *RUN, RING]), env, tmp_path).wait()
    assert job.returncode != 0, job
    assert job.stdout == "", job
    for node in range(3):
        assert (f"distrcomp node {node}: munge on dcsl-h{node + 1}: munge: Error: Failed to "
                "access munged") in job.stderr, job
    assert "Traceback" not in job.stderr, job

"""Faults across hosts: a remote node killed, a host's sshd stopped mid-job, a host unplugged.
The job ends (no hang beyond ``--timeout``), names node and host, and leaves no process behind
on any host (``no_survivors`` checks each host's namespace).

The launcher's own last-resort clean-up only looks at its own network namespace (real other
machines are out of its reach), so what is checked here is what the MPI, ssh and the node
wrappers do on the hosts.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

from tagged import tagged_lines

WAITER = str(Path(__file__).resolve().parent / "programs" / "waiter.py")


def _await_ready(job, count: int, timeout: float = 60) -> str:
    """Read the job's stdout until ``count`` nodes said ``ready``."""
    seen = ""
    deadline = time.monotonic() + timeout
    while seen.count(" ready ") < count:
        assert time.monotonic() < deadline, seen
        line = job.proc.stdout.readline()
        assert line, f"job ended early: {seen!r}"
        seen += line
    return seen


def _user_process(cluster, host: str):
    """The waiter's own process on ``host`` (not its node wrapper, not the MPI daemon)."""
    procs = [p for p in cluster.stray_processes(host)
             if p.argv[-1:] == [WAITER]
             and not any("distrcomp.launcher.node" in word for word in p.argv)]
    assert len(procs) == 1, cluster.stray_processes(host)
    return procs[0]


def test_killed_remote_node_ends_the_job_and_names_node_and_host(cluster, distrcomp, addresses,
                                                                 no_survivors):
    job = distrcomp(addresses, "--timeout", "120", WAITER, start=True)
    _await_ready(job, 3)
    os.kill(_user_process(cluster, "h3").pid, signal.SIGKILL)
    killed_at = time.monotonic()
    job.wait(90)
    assert time.monotonic() - killed_at < 30, job
    assert job.returncode == 128 + signal.SIGKILL, job
    assert f"distrcomp: node 2 ({addresses[2]}) failed: killed by SIGKILL" in job.stderr, job


def test_sshd_stopped_mid_job_completes_or_fails_clearly(cluster, distrcomp, addresses, tmp_path,
                                                         no_survivors):
    (tmp_path / "waiter.py").write_text(Path(WAITER).read_text())
    job = distrcomp(addresses, "--timeout", "60", "--files", "waiter.py", "--", "python",
                    "waiter.py", "4", start=True)
    try:
        seen = _await_ready(job, 3)
        cluster.stop_sshd("h2")
        job.wait(120)
    finally:
        cluster.start_sshd("h2")
    # Open sessions outlive the daemon: the job completes; only removing the files from h2
    # needs a new connection, and that failure is named.
    assert job.returncode == 0, job
    assert sorted(text for _, _, text in tagged_lines(seen + job.stdout)) == [
        "done h1", "done h2", "done h3", "ready h1", "ready h2", "ready h3"]
    assert "could not remove /tmp/distrcomp-" in job.stderr and f" on {addresses[1]}: ssh: " \
        "connect to host" in job.stderr, job


def test_unplugged_host_is_lost_and_ends_the_job_before_the_time_limit(cluster, distrcomp,
                                                                       addresses):
    # ssh's keepalive (ServerAliveInterval) and the relay's TCP keepalive notice the silence;
    # MPICH's mpiexec alone would wait forever.
    job = distrcomp(addresses, "--timeout", "110", WAITER, start=True)
    try:
        _await_ready(job, 3)
        cluster.set_link("h3", False)
        unplugged = time.monotonic()
        job.wait(150)
        took = time.monotonic() - unplugged
    finally:
        cluster.set_link("h3", True)
    assert job.returncode not in (0, 124), job
    assert took < 75, job
    # the summary's table names the node and its host
    assert re.search(rf"^ +2 +{re.escape(addresses[2])} +lost", job.stderr, re.MULTILINE), job
    # replugged: what was left on h3 ends once its ssh session notices the launcher is gone
    left = cluster.wait_no_strays(timeout=40)
    if left:
        cluster.kill_strays()
    assert not left, left

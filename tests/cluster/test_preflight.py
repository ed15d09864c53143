"""The pre-flight of ``distrcomp run``: every remote host must answer ssh before anything is
launched; otherwise exit 2 naming each bad host with ssh's own error line."""

from __future__ import annotations

import re
import uuid
from pathlib import Path


def _marker() -> Path:
    return Path("/tmp") / f"distrcomp-preflight-{uuid.uuid4().hex}"


def test_unreachable_host_is_named_with_sshs_error_and_nothing_launched(cluster, distrcomp,
                                                                        addresses, no_survivors):
    marker = _marker()
    bad = cluster.unused_address
    run = distrcomp([addresses[0], bad, addresses[2]], "--", "touch", str(marker))
    assert run.returncode == 2, run
    assert "pre-flight: 1 of 3 remote hosts failed" in run.stderr, run
    assert re.search(rf"^  {re.escape(bad)}: ssh: connect to host {re.escape(bad)} port 22: "
                     r"(Connection timed out|No route to host)$", run.stderr, re.MULTILINE), run
    assert addresses[0] not in run.stderr and addresses[2] not in run.stderr
    assert not marker.exists()
    assert "Total time" not in run.stderr and "[mpiexec]" not in run.stderr


def test_refused_key_names_every_host(cluster, distrcomp, addresses, no_survivors):
    marker = _marker()
    run = distrcomp(addresses, "--", "touch", str(marker), ssh_config=cluster.bad_key_ssh_config)
    assert run.returncode == 2, run
    assert "pre-flight: 3 of 3 remote hosts failed" in run.stderr, run
    for address in addresses:
        assert f"  {address}: root@{address}: Permission denied (publickey)." in run.stderr, run
    assert not marker.exists()


def test_no_check_skips_the_pre_flight_but_the_key_still_goes_over_ssh(cluster, distrcomp,
                                                                      addresses, no_survivors):
    # The job's key reaches each remote host over ssh before the job (issue 24, item 1): a host
    # that cannot be reached stops the job there, named, even without the pre-flight.
    bad = cluster.unused_address
    run = distrcomp([addresses[0], bad], "--no-check", "--timeout", "60", "--", "true")
    assert run.returncode == 2, run
    assert "pre-flight" not in run.stderr
    assert run.stderr.startswith("distrcomp: run: could not deliver the job's key over ssh to 1 "
                                 "of 2 remote hosts (nothing launched):\n"), run
    assert f"  {bad}: ssh: connect to host {bad} port 22" in run.stderr, run


def test_local_hosts_are_not_checked(cluster, distrcomp, addresses, no_survivors):
    # The launcher's own address runs without ssh (there is no sshd in its namespace).
    run = distrcomp([cluster.launcher_address, addresses[0]], "--", "hostname")
    assert run.returncode == 0, run
    assert "pre-flight" not in run.stderr

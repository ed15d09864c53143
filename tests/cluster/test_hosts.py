"""The test hosts themselves: names, ssh, isolation, failure answers, process listing, teardown."""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .hosts import DECOY, Cluster, ClusterUnavailable, list_namespaces, netns_processes

HOSTS_PY = Path(__file__).resolve().parent / "hosts.py"


def _ssh(cluster: Cluster, config: Path, destination: str, *options: str) -> tuple:
    """Run ``ssh -F config [options] destination true`` in the launcher; (exit code, stderr, seconds)."""
    start = time.monotonic()
    done = cluster.run(["ssh", "-F", str(config), *options, destination, "true"], timeout=60)
    return done.returncode, done.stderr.strip(), time.monotonic() - start


def test_each_host_answers_ssh_with_its_own_hostname(cluster):
    for host in cluster.hosts:
        for destination in (host.address, host.name):
            done = cluster.ssh(destination, "hostname")
            assert done.returncode == 0, done.stderr
            assert done.stdout.strip() == host.name


def test_hosts_cannot_reach_the_launcher_by_its_hostname(cluster):
    # The premise of issue 6: the launcher's name means nothing (or loopback) on the peers.
    name = cluster.run(["hostname"]).stdout.strip()
    done = cluster.ssh("h1", f"getent ahostsv4 {name} || true")
    addresses = {line.split()[0] for line in done.stdout.splitlines() if line.strip()}
    assert cluster.launcher_address not in addresses
    assert all(ipaddress.ip_address(a) not in cluster.network for a in addresses), addresses


def test_namespaces_route_only_to_the_test_subnets(cluster):
    allowed = {str(cluster.network), str(ipaddress.ip_interface(DECOY).network)}
    for netns in [cluster.launcher_ns] + [h.netns for h in cluster.hosts]:
        routes = subprocess.run(["ip", "-n", netns, "-4", "route", "show"], capture_output=True,
                                text=True, check=True).stdout.splitlines()
        assert {r.split()[0] for r in routes} <= allowed, (netns, routes)
        six = subprocess.run(["ip", "-n", netns, "-6", "route", "show", "default"],
                             capture_output=True, text=True, check=True).stdout
        assert not six.strip(), (netns, six)


def test_an_address_nobody_holds_fails_fast_with_sshs_own_error(cluster):
    code, err, took = _ssh(cluster, cluster.ssh_config, cluster.unused_address,
                           "-o", "ConnectTimeout=3")
    assert code == 255
    # ARP for the address goes unanswered: ssh gives up at ConnectTimeout, or the kernel reports
    # the failed neighbour after ~3 s (at once while it remembers the failure).
    pattern = rf"ssh: connect to host {re.escape(cluster.unused_address)} port 22: " \
              r"(Connection timed out|No route to host)"
    assert re.search(pattern, err), err
    assert took < 30


def test_a_refused_key_says_permission_denied(cluster):
    code, err, _ = _ssh(cluster, cluster.bad_key_ssh_config, "h1")
    assert code == 255
    assert f"root@{cluster.host('h1').address}: Permission denied (publickey)." in err


def test_a_stopped_sshd_refuses_the_connection(cluster):
    cluster.stop_sshd("h3")
    try:
        code, err, took = _ssh(cluster, cluster.ssh_config, "h3")
        assert code == 255
        assert f"connect to host {cluster.host('h3').address} port 22: Connection refused" in err
        assert took < 30
    finally:
        cluster.start_sshd("h3")
    assert cluster.ssh("h3", "hostname").stdout.strip() == "h3"


def test_processes_are_listed_per_host(cluster):
    marker = f"distrcomp-probe-{os.getpid()}"
    done = cluster.ssh("h2", f"exec -a {marker} sleep 300 </dev/null >/dev/null 2>&1 &")
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 10
    while True:  # ssh returns once the shell forked; the child may not have exec'd yet
        strays = {h.name: [p.argv[0] for p in cluster.stray_processes(h.name)]
                  for h in cluster.hosts}
        if marker in strays["h2"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert marker in strays["h2"], strays
    assert marker not in strays["h1"] + strays["h3"]
    cluster.kill_strays()
    assert cluster.wait_no_strays(timeout=10) == {}


def test_context_manager_builds_a_second_cluster_and_removes_everything():
    with Cluster() as second:
        names = [second.switch_ns, second.launcher_ns] + [h.netns for h in second.hosts]
        assert set(names) <= set(list_namespaces())
        # Same addresses as the session's cluster, no clash: every run has its own namespaces.
        assert second.ssh(second.hosts[0].address, "hostname").stdout.strip() == "h1"
        pids = [p.pid for h in second.hosts for p in second.processes(h.name)]
        tmp = second.tmp
    assert not set(names) & set(list_namespaces())
    assert not tmp.exists()
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    assert not any((Path("/etc/netns") / name).exists() for name in names)


def test_down_by_hand_removes_a_cluster_whose_owner_exited():
    up = subprocess.run([sys.executable, str(HOSTS_PY), "up"], capture_output=True, text=True,
                        timeout=120, check=False)
    assert up.returncode == 0, up.stderr
    names = sorted(set(re.findall(r"dc-\d+-\d+-(?:ln|h\d)", up.stdout)))
    assert names and set(names) <= set(list_namespaces())
    assert "leftover" in subprocess.run([sys.executable, str(HOSTS_PY), "status"],
                                        capture_output=True, text=True, check=True).stdout
    down = subprocess.run([sys.executable, str(HOSTS_PY), "down"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert down.returncode == 0, down.stderr
    assert not set(names) & set(list_namespaces())
    assert all(not netns_processes(name) for name in names)


def test_up_refuses_with_the_reason(monkeypatch):
    from . import hosts

    monkeypatch.setattr(hosts, "unavailable_reason", lambda: "no sshd here")
    with pytest.raises(ClusterUnavailable, match="no sshd here"):
        Cluster().up()


@pytest.mark.parametrize("required, outcome", [("0", "1 skipped"), ("1", "1 error")])
def test_fixture_skips_without_root_unless_required(required, outcome):
    """Run one cluster test in a user namespace, where this process is not root (euid 65534) but
    can still read the checkout: it skips, or errors when DISTRCOMP_REQUIRE_CLUSTER=1."""
    test = f"{Path(__file__).resolve()}::test_each_host_answers_ssh_with_its_own_hostname"
    env = {**os.environ, "DISTRCOMP_REQUIRE_CLUSTER": required, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        ["unshare", "--user", sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", test],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )
    if "unshare failed" in done.stderr:
        pytest.skip(f"no user namespaces here: {done.stderr.strip()}")
    assert outcome in done.stdout, done.stdout + done.stderr
    assert "needs root" in done.stdout


def test_crash_host_kills_everything_and_start_sshd_revives_it(cluster):
    cluster.ssh("h2", "exec sleep 300 </dev/null >/dev/null 2>&1 &")
    cluster.crash_host("h2")
    assert cluster.processes("h2") == []
    code, err, _ = _ssh(cluster, cluster.ssh_config, "h2")
    assert code == 255 and "Connection refused" in err, err
    cluster.start_sshd("h2")
    assert cluster.ssh("h2", "hostname").stdout.strip() == "h2"


def test_unplugged_host_times_out_and_plugs_back(cluster):
    cluster.set_link("h1", False)
    try:
        code, err, took = _ssh(cluster, cluster.ssh_config, "h1", "-o", "ConnectTimeout=2")
        assert code == 255
        assert "port 22: Connection timed out" in err or "No route to host" in err, err
        assert took < 30
    finally:
        cluster.set_link("h1", True)
    assert cluster.ssh("h1", "hostname").stdout.strip() == "h1"

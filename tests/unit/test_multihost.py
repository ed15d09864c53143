"""Pure parts of multi-host launching: addresses, ssh command lines, file lists, directories."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from distrcomp.launcher import address, ssh
from distrcomp.launcher.flavor import MPICH, OPENMPI, Flavor
from distrcomp.launcher.remote import _host_slots
from distrcomp.launcher.staging import StagingError, check_files, node_workdir, parse_files


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST.", "127.0.0.1", "127.1.2.3", "::1",
                                  "[::1]", socket.gethostname()])
def test_local_hosts(host):
    assert address.is_local(host)


@pytest.mark.parametrize("host", ["10.255.1.2", "example.org", "h1", "2001:db8::1"])
def test_remote_hosts(host):
    assert not address.is_local(host)


def test_validate_accepts_loopback_and_rejects_foreign_addresses():
    assert address.validate("127.0.0.1").address == "127.0.0.1"
    with pytest.raises(address.AddressError, match="192.0.2.55 is not an address of this machine"):
        address.validate("192.0.2.55")
    with pytest.raises(address.AddressError, match="'nohost' is not an IP address"):
        address.validate("nohost")


def test_route_source_of_loopback():
    assert address.route_source("127.0.0.1") == "127.0.0.1"


def test_ssh_argv_has_batch_mode_timeouts_and_keepalive():
    argv = ssh.ssh_argv("h1", "true", "/c")
    assert argv[:3] == ["ssh", "-F", "/c"]
    assert argv[-3:] == ["--", "h1", "true"]
    options = dict(item.split("=") for item in argv[4:-3:2])
    assert options == {"BatchMode": "yes", "ConnectTimeout": str(ssh.CONNECT_TIMEOUT),
                       "ServerAliveInterval": "5", "ServerAliveCountMax": "3"}
    assert ssh.ssh_argv("h1", "true")[1:3] == ["-o", "BatchMode=yes"]  # ~/.ssh/config applies


def test_wrapper_passes_its_arguments_to_ssh(tmp_path):
    path = ssh.write_wrapper(str(tmp_path / "ssh"), "/my config")
    text = Path(path).read_text()
    assert "exec ssh -F '/my config' -o BatchMode=yes" in text and text.endswith(' "$@"\n')
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700


def test_last_error_line():
    assert ssh.last_error_line("warning\nssh: connect to host x port 22: refused\n\n") == \
        "ssh: connect to host x port 22: refused"
    assert ssh.last_error_line("") == "(ssh printed nothing)"


@pytest.mark.parametrize(("name", "expected"), [
    (MPICH, (["-launcher", "ssh", "-launcher-exec", "/w"], ["-localhost", "10.0.0.1"],
             ["-wdir", "/d"])),
    (OPENMPI, (["--mca", "plm_ssh_agent", "/w"],
               ["--mca", "oob_tcp_if_include", "10.0.0.0/24", "--mca", "btl_tcp_if_include",
                "10.0.0.0/24"], ["--wdir", "/d"])),
])
def test_flavor_arguments(name, expected):
    flavor = Flavor(name, "mpiexec")
    got = (flavor.ssh_args("/w"), flavor.address_args("10.0.0.1", "10.0.0.0/24"),
           flavor.wdir_args("/d"))
    assert got == expected
    if name == OPENMPI:
        assert flavor.address_args("10.0.0.1", None) == []


def test_host_slots_groups_consecutive_nodes():
    assert _host_slots(["a", "a", "b", "c", "c", "c"]) == (["a", "b", "c"], [2, 1, 3])


@pytest.mark.parametrize(("node", "expected"), [(0, "/j/0"), (1, "/j/0"), (2, "/j/1"), (5, "/j/2")])
def test_node_workdir(node, expected):
    assert node_workdir("/j", "2,1,3", node) == expected


def test_node_workdir_beyond_the_slots():
    with pytest.raises(ValueError, match="node 6 is beyond the 6 slots"):
        node_workdir("/j", "2,1,3", 6)


def test_parse_and_check_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.py").write_text("")
    (tmp_path / "conf").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.py").write_text("")
    assert parse_files(" a.py, conf/ ,,") == ["a.py", "conf/"]
    assert [item.name for item in check_files(["a.py", "conf/"])] == ["a.py", "conf"]
    with pytest.raises(StagingError, match="--files: nope: no such file or directory"):
        check_files(["nope"])
    with pytest.raises(StagingError, match="a.py and other/a.py would both be 'a.py'"):
        check_files(["a.py", "other/a.py"])

"""Malformed peers files stop ``distrcomp run`` before anything starts; ``distrcomp hostfile``
and ``--dry-run`` show what would be launched, in either MPI's syntax."""

from __future__ import annotations

import shlex
import subprocess
import sys

import pytest
from jobtools import ROOT, installed_command, launch

from distrcomp.runscript import command as script_command

BAD_PEERS = [
    # (file content, line, reason)
    (b"", 1, "no host in the file (the file is empty)"),
    (b"# only a comment\n\n", 2, "only comments and blank lines"),
    (b"a\nb slots=0\n", 2, "slots must be a positive integer, got '0'"),
    (b"a\nb\nc slots=x\n", 3, "slots must be a positive integer, got 'x'"),
    (b"a slots=-1\n", 1, "slots must be a positive integer, got '-1'"),
    (b"a slots=\n", 1, "slots must be a positive integer, got ''"),
    (b"a:0\n", 1, "slots must be a positive integer, got '0'"),
    (b"a:two\n", 1, "slots must be a positive integer, got 'two'"),
    (b"a slots=99999999\n", 1, "slots must be at most"),
    (b"a\n# c\nA\n", 3, "duplicate host 'A' (first on line 1)"),
    (b"::1\n0:0::1 slots=2\n", 2, "duplicate host '0:0::1' (first on line 1)"),
    (b"10.0.0.256\n", 1, "'10.0.0.256' is not a valid IPv4 address"),
    (b"1.2.3\n", 1, "'1.2.3' is not a valid IPv4 address"),
    (b"-bad-\n", 1, "bad host name '-bad-'"),
    (b"a_b\n", 1, "bad host name 'a_b'"),
    (b"host slots=2 extra\n", 1, "unexpected 'extra' after the host"),
    (b"host max_slots=2\n", 1, "unknown option 'max_slots'"),
    (b"host:2 slots=2\n", 1, "the slot count is given twice"),
    (b"[::1\n", 1, "missing ']'"),
    (b"[nothost]:2\n", 1, "'nothost' in brackets is not an IPv6 address"),
    (b"1:2:3\n", 1, "'1:2:3' is not an IPv6 address"),
    (b"user@host\n", 1, "user names are not supported"),
    (b"ok\n\xff\xfejunk\n", 2, "not UTF-8 text (byte 0xff)"),
    (b"ok\nho\x00st\n", 2, "binary data (a NUL byte)"),
    (b"ok\nho\x01st\n", 2, "unexpected control character '\\x01'"),
    ("h\u00f6st\n".encode(), 1, "unexpected non-ASCII character"),
    # issue 24, item 10: each refused with its line, not later by ssh or the MPI
    (b"a\nlocal#host\n", 2, "'#' right after 'local'"),
    (b"a\n0.0.0.0\n", 2, "'0.0.0.0' is not a host's address (unspecified)"),
    (b"[::]:2\n", 1, "'::' is not a host's address (unspecified)"),
    (b"a\n\nssh://localhost\n", 3, "'ssh://localhost' is not a host"),
    # issue 24, item 12: this machine to the launcher, a remote host to the MPI (exit 255)
    (b"localhost\n127.0.0.2 slots=2\n", 2, "127.0.0.2 is a loopback address of this machine"),
    (b"a\nb\n" + b"\0" * 100, 3, "binary data (a NUL byte)"),
    (b"a\n" + b"# comment\n" * 200_000, 104_859, "the file is larger than 1048576 bytes"),
]


@pytest.mark.parametrize(("content", "line", "reason"), BAD_PEERS,
                         ids=[f"{i}-{case[2][:24]}" for i, case in enumerate(BAD_PEERS)])
def test_malformed_peers_file_launches_nothing(tmp_path, content, line, reason):
    (tmp_path / "peers.txt").write_bytes(content)
    witness = tmp_path / "ran"
    done = launch(tmp_path, "run", "--", "sh", "-c", f"touch {shlex.quote(str(witness))}")
    assert done.returncode == 2, done
    assert done.stderr.startswith(f"distrcomp: peers.txt:{line}: "), done.stderr
    assert reason in done.stderr, done.stderr
    assert len(done.stderr.splitlines()) == 1 and done.stdout == ""
    assert not witness.exists(), "something was launched"


def test_ipv6_cannot_be_written_for_mpich(tmp_path):
    (tmp_path / "peers.txt").write_text("localhost\n::1 slots=2\n")
    done = launch(tmp_path, "hostfile", "peers.txt", "--format", "mpich")
    assert done.returncode == 2
    assert done.stderr.startswith("distrcomp: peers.txt:2: MPICH hostfiles cannot hold")
    ok = launch(tmp_path, "hostfile", "peers.txt", "--format", "openmpi")
    assert ok.stdout == "localhost slots=1\n::1 slots=2\n"


EXAMPLE = ROOT / "hostfile.example"
EXAMPLE_HOSTFILES = {
    "mpich": "localhost:2\n192.0.2.10:1\nnode1.example.org:1\n192.0.2.11:4\nnode2.example.org:2\n",
    "openmpi": "localhost slots=2\n192.0.2.10 slots=1\nnode1.example.org slots=1\n"
               "192.0.2.11 slots=4\nnode2.example.org slots=2\n",
}


@pytest.mark.parametrize("flavor", ["mpich", "openmpi", "installed"])
def test_hostfile_example_for_each_mpi(tmp_path, flavor):
    # the commented peers file at the top of the repository, as the installed command shows it
    from distrcomp.launcher.flavor import detect

    options = [] if flavor == "installed" else ["--format", flavor]
    done = launch(tmp_path, "hostfile", str(EXAMPLE), *options, command=installed_command())
    assert done.returncode == 0 and done.stderr == "", done
    assert done.stdout == EXAMPLE_HOSTFILES[detect().name if flavor == "installed" else flavor]


def test_hostfile_example_ipv6_lines_work_with_open_mpi_only(tmp_path):
    # the example's IPv6 lines are commented out (MPICH refuses them): uncommented, they parse
    lines = EXAMPLE.read_text().splitlines()
    ipv6 = [number for number, line in enumerate(lines) if line.startswith(("#2001:db8:", "#[2001:db8:"))]
    assert len(ipv6) == 3
    for number in ipv6:
        lines[number] = lines[number][1:]
    (tmp_path / "peers.txt").write_text("\n".join(lines) + "\n")
    done = launch(tmp_path, "hostfile", "peers.txt", "--format", "openmpi")
    assert done.returncode == 0, done
    assert done.stdout == EXAMPLE_HOSTFILES["openmpi"] + (
        "2001:db8::10 slots=2\n2001:db8::11 slots=2\n2001:db8::12 slots=1\n")
    refused = launch(tmp_path, "hostfile", "peers.txt", "--format", "mpich")
    assert refused.returncode == 2 and refused.stdout == "", refused
    assert refused.stderr.startswith(f"distrcomp: peers.txt:{ipv6[0] + 1}: MPICH hostfiles cannot hold")


def test_an_endless_peers_file_is_refused_at_once(tmp_path):
    # issue 24, item 10: /dev/zero was read until memory ran out (a MemoryError traceback)
    witness = tmp_path / "ran"
    done = launch(tmp_path, "run", "--peers", "/dev/zero", "--", "touch", str(witness),
                  timeout=60)
    assert done.returncode == 2, done
    assert done.stderr == "distrcomp: /dev/zero:1: binary data (a NUL byte): a peers file is " \
        "text, one host per line\n", done
    assert not witness.exists(), "something was launched"


PEERS = "# cluster\n10.0.0.2\n10.0.0.3 slots=4\nnode7.cluster:2  # MPICH style\n"


@pytest.mark.parametrize(("flavor", "hostfile"), [
    ("mpich", "10.0.0.2:1\n10.0.0.3:4\nnode7.cluster:2\n"),
    ("openmpi", "10.0.0.2 slots=1\n10.0.0.3 slots=4\nnode7.cluster slots=2\n"),
])
def test_hostfile_and_dry_run_for_both_mpis(tmp_path, flavor, hostfile):
    (tmp_path / "peers.txt").write_text(PEERS)
    shown = launch(tmp_path, "hostfile", "peers.txt", "--format", flavor)
    assert shown.returncode == 0 and shown.stdout == hostfile

    (tmp_path / "prog.py").write_text("print('never run')\n")
    # the peers are other machines: the launcher address is given, so the line is the same
    # wherever the test runs
    dry = launch(tmp_path, "run", "--mpi", flavor, "--dry-run", "-x", "OMP_NUM_THREADS=2",
                 "--launcher-address", "127.0.0.1", "--mpi-args", "--verbose", "prog.py", "arg 1")
    assert dry.returncode == 0, dry
    lines = dry.stdout.splitlines()
    start = lines.index(f"# hostfile from peers.txt ({flavor} syntax):")
    assert lines[start + 1] == """cat > "$dir"/hostfile <<'EOF'"""
    assert "\n".join(lines[start + 2:start + 5]) + "\n" == hostfile
    assert lines[start + 5] == "EOF"
    assert "export OMP_NUM_THREADS=2" in lines
    assert lines[-2] == "# mpiexec command line (7 nodes):"
    argv = shlex.split(lines[-1])
    # the command as given, through distrcomp.runscript (which sees a SystemExit), without the
    # node wrapper, which needs the launcher running
    assert argv[-5:] == script_command([sys.executable, "prog.py", "arg 1"], 1)
    # output to a pipe and no PYTHONUNBUFFERED of the test's own: the nodes buffer, none is sent;
    # nothing of the relay is forwarded
    names = "OMP_NUM_THREADS,PATH"
    assert argv[argv.index("-launcher-exec" if flavor == "mpich" else "plm_ssh_agent") + 1] \
        == "$dir/ssh"
    if flavor == "mpich":
        assert argv[1:-5] == ["-f", "$dir/hostfile", "-n", "7", "-envlist", names,
                              "-launcher", "ssh", "-launcher-exec", "$dir/ssh",
                              "-localhost", "127.0.0.1", "--verbose"]
    else:
        env = [arg for name in names.split(",") for arg in ("-x", name)]
        assert argv[1:-5] == ["--oversubscribe", "--hostfile", "$dir/hostfile", "--map-by",
                              "slot", "-n", "7", *env, "--mca", "plm_ssh_agent", "$dir/ssh",
                              "--verbose"]
    assert "never run" not in dry.stdout + dry.stderr


def test_a_dry_run_prints_a_script_that_runs_as_printed(tmp_path):
    # issue 24, item 16: the hostfile path printed was in a directory removed on exit
    (tmp_path / "peers.txt").write_text("localhost slots=2\n")
    (tmp_path / "prog.py").write_text(
        "import os, sys\n"
        "rank = os.environ.get('PMI_RANK') or os.environ['OMPI_COMM_WORLD_RANK']\n"
        "# one write per line: bare mpiexec may mix the pieces of two ranks' lines\n"
        "os.write(1, f\"rank {rank} {sys.argv[1:]} {os.environ['GREETING']}\\n\".encode())\n")
    dry = launch(tmp_path, "run", "--dry-run", "-x", "GREETING=hi there", "prog.py", "a b")
    assert dry.returncode == 0, dry
    ran = subprocess.run(["sh", "-c", dry.stdout], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, check=False)
    assert ran.returncode == 0, (dry.stdout, ran.stderr)
    assert sorted(ran.stdout.splitlines()) == [
        "rank 0 ['a b'] hi there", "rank 1 ['a b'] hi there"], (dry.stdout, ran.stderr)


def test_dry_run_without_peers_runs_locally(tmp_path):
    dry = launch(tmp_path, "run", "-n", "3", "--mpi", "openmpi", "--dry-run", "--", "hostname")
    assert dry.returncode == 0, dry
    lines = dry.stdout.splitlines()
    assert "# no hostfile: every node runs on this machine" in lines
    argv = shlex.split(lines[-1])
    assert argv[1:4] == ["--oversubscribe", "-n", "3"]  # more nodes than cores is fine locally
    assert argv[-1] == "hostname"

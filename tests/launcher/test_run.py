"""``distrcomp run`` on this machine, jobs that succeed: tagging, forms of the command, peers
files, environment, the channel's secret, and the launcher's own process staying MPI-free."""

from __future__ import annotations

import importlib.metadata
import os
import pty
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from jobtools import ROOT, installed_command, launch, program, start, tagged_lines, wait_for_files

from distrcomp.launcher.flavor import detect

RING = str(ROOT / "examples" / "ring.py")


def test_ring_on_four_local_nodes(tmp_path):
    done = launch(tmp_path, "run", "-n", "4", RING)
    assert done.returncode == 0, done
    lines = tagged_lines(done.stdout)
    assert sorted(node for node, _, _ in lines) == [0, 1, 2, 3]
    for node, host, text in lines:
        assert host == "localhost"
        assert text == f"node {node} of 4 got: 'hello from node {(node - 1) % 4}'"
    assert re.search(r"^Total time : \d+\.\d{3} s$", done.stderr, re.MULTILINE), done


def test_default_is_one_node(tmp_path):
    done = launch(tmp_path, "run", RING)
    assert done.returncode == 0, done
    assert tagged_lines(done.stdout) == [(0, "localhost", "node 0 of 1 got: 'hello from node 0'")]


def test_python_dash_m_and_double_dash_form(tmp_path):
    done = launch(tmp_path, "run", "-n", "2", "--", sys.executable, RING)
    assert done.returncode == 0, done
    assert len(tagged_lines(done.stdout)) == 2


def test_non_python_command(tmp_path):
    script = ("r=${PMI_RANK:-$OMPI_COMM_WORLD_RANK}; "
              "echo out from $r; echo err from $r >&2; printf 'no newline'")
    done = launch(tmp_path, "run", "-n", "2", "--", "sh", "-c", script)
    assert done.returncode == 0, done
    out = sorted(tagged_lines(done.stdout))
    assert out == [(0, "localhost", "no newline"), (0, "localhost", "out from 0"),
                   (1, "localhost", "no newline"), (1, "localhost", "out from 1")]
    err = [line for line in done.stderr.splitlines() if line.startswith("[node")]
    assert sorted(err) == ["[node 0 \u00b7 localhost] err from 0", "[node 1 \u00b7 localhost] err from 1"]


def test_stdin_goes_to_node_0_others_read_nothing(tmp_path):
    if detect().name == "openmpi":
        pytest.skip("Open MPI 5 never closes rank 0's stdin, even under plain mpiexec")
    done = launch(tmp_path, "run", "-n", "2", "--", "cat", stdin=b"hello\nworld\n", timeout=60)
    assert done.returncode == 0, done
    assert tagged_lines(done.stdout) == [(0, "localhost", "hello"), (0, "localhost", "world")]


def test_command_not_found_is_exit_127(tmp_path):
    done = launch(tmp_path, "run", "-n", "2", "--", "no-such-program-distrcomp")
    assert done.returncode == 127, done
    assert "cannot run 'no-such-program-distrcomp'" in done.stderr


def test_peers_file_gives_localhost_three_slots(tmp_path):
    (tmp_path / "peers.txt").write_text("# three nodes here\nlocalhost slots=3\n")
    done = launch(tmp_path, "run", program("env.py"))  # ./peers.txt is the default
    assert done.returncode == 0, done
    lines = tagged_lines(done.stdout)
    assert sorted(node for node, _, _ in lines) == [0, 1, 2]
    for node, host, text in lines:
        assert host == "localhost"
        assert text.startswith(f"rank {node} size 3 "), text  # mpi4py under the wrapper


def test_peers_and_n_take_the_first_slots(tmp_path):
    peers = tmp_path / "hosts.txt"
    peers.write_text("localhost:3\n")
    done = launch(tmp_path, "run", "-n", "2", "--peers", str(peers), program("env.py"))
    assert done.returncode == 0, done
    assert sorted(text.split()[:4] for _, _, text in tagged_lines(done.stdout)) == [
        ["rank", "0", "size", "2"], ["rank", "1", "size", "2"]]


def test_more_nodes_than_slots_is_a_usage_error(tmp_path):
    (tmp_path / "peers.txt").write_text("localhost slots=2\n")
    done = launch(tmp_path, "run", "-n", "3", program("env.py"))
    assert done.returncode == 2, done
    assert "peers.txt: 3 nodes asked for, but the peers file offers only 2 slots" in done.stderr


def test_environment_forwarding_and_secret_hygiene(tmp_path):
    done = launch(tmp_path, "run", "-n", "2", "-x", "DC_TEST_A=alpha", "-x", "DC_TEST_B",
                  program("env.py"), env={"DC_TEST_B": "beta"})
    assert done.returncode == 0, done
    for node, _, text in tagged_lines(done.stdout):
        fields = dict(item.split("=", 1) for item in text.split()[4:])
        assert fields["DC_TEST_A"] == "alpha" and fields["DC_TEST_B"] == "beta"
        assert fields["PYTHONUNBUFFERED"] == "-"  # output to a pipe: Python buffers it
        # the wrapper removes the channel's address and secret before running the command
        assert fields["DISTRCOMP_RELAY_SECRET"] == "-" and fields["DISTRCOMP_RELAY"] == "-"
        assert fields["DISTRCOMP_JOB"] != "-"


def test_python_output_is_unbuffered_with_u_or_on_a_terminal(tmp_path):
    done = launch(tmp_path, "run", "-n", "2", "-u", program("env.py"))
    assert done.returncode == 0, done
    assert [text.split()[7] for _, _, text in tagged_lines(done.stdout)] == \
        ["PYTHONUNBUFFERED=1"] * 2
    # the launcher's stdout a terminal: nodes write each line as it is printed
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "distrcomp", "run", "-n", "2", "--no-tag", program("env.py")],
            cwd=tmp_path, stdout=follower, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},
        )
        os.close(follower)
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the terminal's last writer is gone
                break
            if not chunk:
                break
            seen += chunk
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
    finally:
        os.close(leader)
    assert seen.count(b"PYTHONUNBUFFERED=1") == 2, seen


def test_a_pythonunbuffered_of_ones_own_is_passed_on(tmp_path):
    done = launch(tmp_path, "run", "-n", "1", program("env.py"), env={"PYTHONUNBUFFERED": "x"})
    assert done.returncode == 0, done
    assert "PYTHONUNBUFFERED=x" in done.stdout, done


def test_mpi_args_pass_through(tmp_path):
    # harmless options that only affect lines mpiexec itself would relay
    option = "--tag-output" if detect().name == "openmpi" else "-prepend-rank"
    done = launch(tmp_path, "run", "-n", "2", "--mpi-args", option, program("env.py"))
    assert done.returncode == 0, done
    assert len(tagged_lines(done.stdout)) == 2


def test_launcher_never_imports_mpi(tmp_path):
    code = (
        "import sys\n"
        "from distrcomp.launcher.cli import main\n"
        f"rc = main(['run', '-n', '2', {RING!r}])\n"
        "assert 'mpi4py' not in sys.modules, 'the launcher imported mpi4py'\n"
        "sys.exit(rc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


# Every node waits for the launcher's start-up: a job on this machine alone must not pay for
# what only multi-host jobs, --files, --legacy-master, --group, --help or a failure need, nor
# for stdlib modules that each cost ms to import (re with enum, which argparse, shlex, json,
# signal, socket and subprocess import and use; collections, which functools, contextlib and
# selectors import): a plain local run uses the C parts of signal and socket, os.posix_spawn,
# epoll, and a command-line reader of its own (cli._fast_run_args).
_SLOW_TO_IMPORT = {
    "enum", "re", "argparse", "shlex", "json", "signal", "socket", "subprocess", "threading",
    "locale", "collections", "functools", "contextlib", "selectors", "typing", "dataclasses",
    "inspect", "tempfile", "shutil", "ast", "tokenize",
    "tarfile", "pathlib", "distrcomp.launcher.address", "distrcomp.launcher.staging",
    "distrcomp.launcher.legacy", "distrcomp.launcher.peers", "distrcomp.launcher.ssh",
    "distrcomp.launcher.node", "mpi4py", "numpy",
}


@pytest.mark.parametrize("extra", [(), ("--timeout", "60", "-x", "A=1", "-u", "--no-check")])
def test_a_local_run_imports_little(tmp_path, extra):
    script = tmp_path / "hello.py"
    script.write_text("import distrcomp as dc\nprint('hello from', dc.node_id)\n")
    # the installed command, its imports listed by -X importtime (which, unlike the variable,
    # its children do not inherit: every line of it is the launcher's)
    command = [sys.executable, "-X", "importtime", *installed_command()]
    done = launch(tmp_path, "run", "-n", "2", *extra, str(script), command=command)
    assert done.returncode == 0, done
    assert len(tagged_lines(done.stdout)) == 2
    own = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    imported = {line.rsplit("|", 1)[-1].strip() for line in own}
    assert "distrcomp.launcher.job" in imported
    assert not imported & _SLOW_TO_IMPORT, sorted(imported & _SLOW_TO_IMPORT)


def _mpiexec_of(pid: int) -> int:
    """The launcher's child that is mpiexec (the one with the relay's address in its
    environment; the other is the launcher's scratch janitor)."""
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read()
            if not name.isdigit() or int(stat[stat.rfind(b")") + 2:].split()[1]) != pid:
                continue
            with open(f"/proc/{name}/environ", "rb") as handle:
                if any(entry.startswith(b"DISTRCOMP_RELAY=") for entry in handle.read().split(b"\0")):
                    return int(name)
        except OSError:
            continue
    pytest.fail(f"the launcher ({pid}) has no mpiexec child")


def test_mpiexec_gets_none_of_the_launchers_descriptors_and_sigpipe_at_its_default(tmp_path):
    # as subprocess.Popen started it: descriptors the launcher inherited are not passed on,
    # and SIGPIPE, which Python ignores, is back at its default (a shell's pipeline works)
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)
    try:
        job = start(tmp_path, "run", "-n", "2", "--", "sh", "-c",
                    "touch ready-$PMI_RANK$OMPI_COMM_WORLD_RANK; sleep 30", pass_fds=[write_end])
        wait_for_files([tmp_path / "ready-0", tmp_path / "ready-1"])
        mpiexec = _mpiexec_of(job.proc.pid)
        pipe = os.readlink(f"/proc/self/fd/{write_end}")
        held = [fd for fd in os.listdir(f"/proc/{mpiexec}/fd")
                if os.readlink(f"/proc/{mpiexec}/fd/{fd}") == pipe]
        with open(f"/proc/{mpiexec}/status") as handle:
            ignored = int(next(line for line in handle if line.startswith("SigIgn:")).split()[1], 16)
        job.proc.send_signal(signal.SIGTERM)
        job.wait()
    finally:
        os.close(read_end)
        os.close(write_end)
    assert held == [], f"mpiexec holds the launcher's inherited pipe as {held}"
    assert not ignored & (1 << (signal.SIGPIPE - 1)), f"mpiexec ignores SIGPIPE ({ignored:x})"
    assert job.returncode == 143, job


def test_help_is_documentation_and_needs_no_mpi():
    code = (
        "import sys\n"
        "from distrcomp.launcher.cli import main\n"
        "try:\n    main(['run', '--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'mpi4py' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    for needle in ("--peers", "--timeout", "--group", "--output-dir", "--no-tag", "--dry-run",
                   "--mpi-args", "slots=4", "exit status", "examples:"):
        assert needle in done.stdout
    script = Path(sys.executable).with_name("distrcomp")  # the console script
    for argv in ([sys.executable, "-m", "distrcomp", "--help"], [str(script), "--help"]):
        top = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert top.returncode == 0 and "run" in top.stdout and "hostfile" in top.stdout


def test_version_is_the_installed_one():
    # The package's __version__ and the installed metadata (pyproject.toml) say the same.
    import distrcomp

    done = subprocess.run([sys.executable, "-m", "distrcomp", "--version"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"distrcomp {distrcomp.__version__}\n"
    assert distrcomp.__version__ == importlib.metadata.version("distrcomp")


@pytest.mark.parametrize("columns, width", [("40", 40), ("0", 80), ("x", 80)])
def test_help_fits_the_terminal_width(columns, width):
    # argparse is told the width ($COLUMNS, else the terminal's, else 80) rather than asking shutil
    done = subprocess.run([sys.executable, "-m", "distrcomp", "hostfile", "--help"],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "COLUMNS": columns})
    assert done.returncode == 0, done.stderr
    description = done.stdout.split("\n\n")[1].splitlines()  # the paragraph after the usage
    assert " ".join(description).startswith("Print the hostfile for the MPI installed"), done.stdout
    assert max(map(len, description)) <= width - 2, done.stdout
    assert len(description) == (1 if width == 80 else 3), done.stdout  # 73 characters


def test_usage_errors_exit_2_with_one_line(tmp_path):
    (tmp_path / "a-file").write_text("")
    for args, needle in [
        (("run",), "no COMMAND given"),
        (("run", "missing.py"), "missing.py: no such file"),
        (("run", "--mpi-args", "'unbalanced", "--", "true"), "--mpi-args"),
        (("run", "-x", "1BAD=x", "--", "true"), "not a valid environment variable name"),
        (("run", "--peers", "nope.txt", "--", "true"), "nope.txt: cannot read"),
        # was "cannot launch .../mpiexec: [Errno 17] File exists: '...'"
        (("run", "--output-dir", str(tmp_path / "a-file"), "--", "true"),
         f"--output-dir {tmp_path / 'a-file'}: not a directory"),
        (("run", "--output-dir", str(tmp_path / "a-file" / "logs"), "--", "true"),
         f"--output-dir {tmp_path / 'a-file' / 'logs'}: cannot make the directory: Not a directory"),
    ]:
        done = launch(tmp_path, *args)
        assert done.returncode == 2, (args, str(done))
        assert needle in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr

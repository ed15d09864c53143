"""The per-node wrapper (:mod:`distrcomp.launcher.node`): that ``distrcomp run`` starts it, and
the wrapper alone against the launcher's side of the channel (:mod:`distrcomp.launcher.channel`),
over a real Unix socket, with real commands."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from jobtools import launch, tagged_lines

from distrcomp.launcher import channel
from distrcomp.launcher.channel import ChannelError, FrameReader, ServerHandshake

TIMEOUT = 30


def test_nodes_run_under_the_wrapper(tmp_path):
    # Each node prints its parent process: the wrapper's relay, a fork of `python -S -c BOOT`.
    prog = tmp_path / "parent.py"
    prog.write_text("import os\nprint(open(f'/proc/{os.getppid()}/cmdline').read().split('\\0')[:3])\n")
    done = launch(tmp_path, "run", "-n", "2", str(prog))
    assert done.returncode == 0, done
    parents = {text for _, _, text in tagged_lines(done.stdout)}
    assert parents == {str([sys.executable, "-S", "-c"])}, done


LISTENERS = """
import os, socket
listening = []
for fd in sorted(int(name) for name in os.listdir("/proc/self/fd")):
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        continue
    try:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            listening.append(str(sock.getsockname()))
    finally:
        sock.detach()
print("listening:", listening, "PMI_FD open:",
      os.environ.get("PMI_FD") is None or os.path.exists(f"/proc/self/fd/{os.environ['PMI_FD']}"))
"""


def test_command_inherits_no_listening_socket_but_keeps_mpis_descriptors(tmp_path):
    # MPICH's mpiexec leaks its listening socket on 0.0.0.0 into every process it starts; the
    # user's command must not get it (the PMI connection it keeps)
    done = launch(tmp_path, "run", "-n", "2", "--", sys.executable, "-c", LISTENERS)
    assert done.returncode == 0, done
    assert [text for _, _, text in tagged_lines(done.stdout)] == \
        ["listening: [] PMI_FD open: True"] * 2, done


def test_command_gets_default_signal_dispositions(tmp_path):
    # Python ignores SIGPIPE and SIGXFSZ in the wrapper; the command must not inherit that
    # (a program that is not Python would then miss the SIGPIPE that ends it in a pipeline).
    done = launch(tmp_path, "run", "-n", "2", "grep", "SigIgn", "/proc/self/status")
    assert done.returncode == 0, done
    masks = {int(text.split()[1], 16) for _, _, text in tagged_lines(done.stdout)}
    assert len(masks) == 1, done
    ignored = masks.pop()
    assert not ignored >> (signal.SIGPIPE - 1) & 1 and not ignored >> (signal.SIGXFSZ - 1) & 1, hex(ignored)


WRAPPER = [sys.executable, "-m", "distrcomp.launcher.node"]


def _start(tmp_path: Path, secret: str, command: list[str],
           under: Sequence[str] = ()) -> tuple[socket.socket, subprocess.Popen]:
    """A listener on a Unix socket, and the wrapper started (``under`` a tracer, if given) as
    node 2 of a job whose launcher listens there."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "relay"))
    listener.listen(1)
    listener.settimeout(TIMEOUT)
    env = {**os.environ, channel.ENV_ADDRESS: channel.UNIX + str(tmp_path / "relay"),
           channel.ENV_SECRET: secret, "PMI_RANK": "2"}
    proc = subprocess.Popen([*under, *WRAPPER, "--", *command], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return listener, proc


def _accept(listener: socket.socket, handshake: ServerHandshake) -> tuple[socket.socket, bytes]:
    """Accept the wrapper's control connection, greet it as ``handshake`` does; return the
    connection and what the node answered (its proof), unchecked."""
    conn, _ = listener.accept()
    conn.settimeout(TIMEOUT)
    conn.sendall(handshake.greeting)
    hello = b""
    while len(hello) < ServerHandshake.SIZE:
        chunk = conn.recv(ServerHandshake.SIZE - len(hello))
        assert chunk, "the wrapper closed the connection during the handshake"
        hello += chunk
    return conn, hello


def _read_all(fd: int) -> bytes:
    data = b""
    while chunk := os.read(fd, 1 << 16):
        data += chunk
    os.close(fd)
    return data


def _serve(listener: socket.socket, proc: subprocess.Popen, secret: str
           ) -> tuple[bytes, bytes, list[tuple[int, bytes]]]:
    """Be the launcher for the wrapper ``proc``: authenticate it, take its command's output
    streams, read them to the end, then its frames up to the exit report; check that it waits
    for the goodbye, say it. Returns the command's stdout, its stderr and the frames."""
    handshake = ServerHandshake(secret)
    conn, hello = _accept(listener, handshake)
    # The node proves it knows the secret, and names itself and the stream.
    assert handshake.feed(hello) == (2, channel.CONTROL)
    conn.sendall(handshake.reply)
    # Then it passes the read ends of the command's stdout and stderr, in one frame.
    message, fds, _, _ = socket.recv_fds(conn, 64, 2)
    assert FrameReader().feed(message) == [(channel.STREAMS, b"")] and len(fds) == 2
    out, err = _read_all(fds[0]), _read_all(fds[1])
    frames: list[tuple[int, bytes]] = []
    reader = FrameReader()
    while not any(kind == channel.EXIT for kind, _ in frames):
        data = conn.recv(1 << 16)
        assert data, f"the connection ended before the exit report: {frames}"
        frames += reader.feed(data)
    assert proc.poll() is None  # it waits for the launcher's goodbye
    conn.sendall(channel.encode(channel.BYE))
    return out, err, frames


def test_wrapper_runs_the_command_on_the_channel(tmp_path):
    secret = channel.new_secret()
    command = ["sh", "-c", 'echo "out ${DISTRCOMP_RELAY_SECRET:-unset}"; echo err >&2; exit 3']
    listener, proc = _start(tmp_path, secret, command)
    try:
        out, err, frames = _serve(listener, proc, secret)
        assert out == b"out unset\n" and err == b"err\n"  # the secret never reaches the command
        assert frames == [(channel.EXIT, frames[-1][1])]
        assert json.loads(frames[-1][1]) == {"returncode": 3}
        assert proc.wait(TIMEOUT) == 3
        assert proc.stderr.read() == b""
    finally:
        proc.kill()
        proc.wait()
        listener.close()


def test_an_empty_environment_does_not_hold_up_the_end(tmp_path):
    # When the command ends, the wrapper reads the environment of every process started since
    # the command to find what the command left running. A process whose environment is empty
    # for good (env -i) was read 21 times, 1 ms apart, as if caught in the middle of an exec:
    # 20 ms more at the end of every node for each such process. Counted here as the wrapper's
    # reads of one started while the command runs.
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (.ci/run installs it)")
    started, go = tmp_path / "started", tmp_path / "go"
    command = ["sh", "-c", f'touch "{started}"; until [ -e "{go}" ]; do sleep 0.01; done']
    sleepers: list[subprocess.Popen] = []

    def start_sleeper() -> None:
        while not started.exists():
            time.sleep(0.001)
        sleeper = subprocess.Popen([shutil.which("sleep"), "60"], env={}, start_new_session=True)
        sleepers.append(sleeper)
        while Path(f"/proc/{sleeper.pid}/environ").read_bytes():  # until its exec is done
            time.sleep(0.001)
        go.touch()

    helper = threading.Thread(target=start_sleeper, daemon=True)
    helper.start()
    trace = tmp_path / "trace"
    secret = channel.new_secret()
    listener, proc = _start(tmp_path, secret, command,
                            under=[strace, "-f", "-qq", "-e", "trace=openat", "-o", str(trace)])
    try:
        _serve(listener, proc, secret)
        assert proc.wait(TIMEOUT) == 0
        helper.join(TIMEOUT)
    finally:
        go.touch()
        proc.kill()
        proc.wait()
        listener.close()
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()
    (sleeper,) = sleepers
    reads = trace.read_text().count(f'"/proc/{sleeper.pid}/environ"')
    assert 1 <= reads <= 4, f"the wrapper read the empty environment {reads} times"


def test_wrapper_and_launcher_each_refuse_a_wrong_secret(tmp_path):
    listener, proc = _start(tmp_path, channel.new_secret(), ["true"])
    try:
        handshake = ServerHandshake(channel.new_secret())
        conn, hello = _accept(listener, handshake)
        # The node's proof does not hold for another secret...
        with pytest.raises(ChannelError, match="wrong proof of the job secret"):
            handshake.feed(hello)
        # ... and a launcher that cannot prove the node's secret is refused, command not run.
        conn.sendall(bytes(32))
        assert proc.wait(TIMEOUT) == 1
        stderr = proc.stderr.read().decode()
        assert f"the listener at unix:{tmp_path}/relay does not know the job secret" in stderr
        assert stderr.startswith("distrcomp node 2: "), stderr
    finally:
        proc.kill()
        proc.wait()
        listener.close()


@pytest.mark.parametrize("missing", ["command", channel.ENV_ADDRESS, "rank"])
def test_wrapper_usage_errors(tmp_path, missing):
    env = {**os.environ, channel.ENV_ADDRESS: "unix:/nonexistent", channel.ENV_SECRET: "00",
           "PMI_RANK": "0"}
    for name in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"):
        if missing == "rank":
            env.pop(name, None)
    if missing == channel.ENV_ADDRESS:
        del env[channel.ENV_ADDRESS]
    command = [] if missing == "command" else ["--", "true"]
    done = subprocess.run([*WRAPPER, *command], check=False, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert done.returncode == 2, done
    expected = {
        "command": "usage: ",
        channel.ENV_ADDRESS: "distrcomp node: DISTRCOMP_RELAY is not set; start nodes with distrcomp run",
        "rank": "distrcomp node: none of PMI_RANK, OMPI_COMM_WORLD_RANK, PMIX_RANK is set",
    }[missing]
    assert done.stderr.startswith(expected), done.stderr


def test_unreachable_launcher_is_named(tmp_path):
    env = {**os.environ, channel.ENV_ADDRESS: f"unix:{tmp_path}/none", channel.ENV_SECRET: "00",
           "PMI_RANK": "1"}
    done = subprocess.run([*WRAPPER, "--", "true"], check=False, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert done.returncode == 1, done
    assert done.stderr == (f"distrcomp node 1: cannot connect to the launcher at unix:{tmp_path}"
                           "/none: [Errno 2] No such file or directory\n"), done.stderr

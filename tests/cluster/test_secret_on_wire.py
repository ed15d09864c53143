"""The relay's secret never crosses the network outside ssh (issue 24, item 1): every frame on
the test bridge during a job across hosts is captured (``capture.py``, in the switch
namespace), TCP streams are put together per connection, and the job's secret is searched for
everywhere but in ssh's connections (port 22, encrypted). The secret is what the nodes' wrappers
got in their environment, or what the job's key files held while they existed (the launcher
removes them once every node has connected)."""

from __future__ import annotations

import glob
import ipaddress
import struct
import subprocess
import sys
import threading
from collections import defaultdict
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SSH_PORT = 22


def _records(data: bytes):
    """``(port, frame)`` of each record capture.py wrote."""
    offset = 0
    while offset < len(data):
        size = data[offset]
        port = data[offset + 1:offset + 1 + size].decode()
        offset += 1 + size
        (length,) = struct.unpack_from(">I", data, offset)
        offset += 4
        yield port, data[offset:offset + length]
        offset += length


def _tcp(frame: bytes):
    """``(src, dst, sport, dport, payload)`` of an IPv4 or IPv6 TCP frame, else None."""
    kind = int.from_bytes(frame[12:14], "big")
    if kind == 0x0800:
        header = (frame[14] & 0x0F) * 4
        proto, src, dst = frame[23], frame[26:30], frame[30:34]
        start = 14 + header
    elif kind == 0x86DD:
        proto, src, dst = frame[20], frame[22:38], frame[38:54]
        start = 54
    else:
        return None
    if proto != 6:
        return None
    sport, dport = struct.unpack_from(">HH", frame, start)
    offset = (frame[start + 12] >> 4) * 4
    return (str(ipaddress.ip_address(src)), str(ipaddress.ip_address(dst)), sport, dport,
            frame[start + offset:])


class KeyFiles(threading.Thread):
    """Collects the contents of every job key file (/tmp/distrcomp-key-*/key) that exists
    while it runs, every 5 ms, until :meth:`stop`."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.found: set[bytes] = set()
        self.paths: set[str] = set()
        self.done = threading.Event()
        self.start()

    def run(self) -> None:
        while not self.done.wait(0.005):
            for path in glob.glob("/tmp/distrcomp-key-*/key"):
                try:
                    with open(path, "rb") as handle:
                        self.found.add(handle.readline().strip())
                    self.paths.add(path)
                except OSError:
                    continue

    def stop(self) -> set[bytes]:
        self.done.set()
        self.join()
        return {secret for secret in self.found if secret}


def outside_ssh(capture: bytes) -> tuple[dict, int]:
    """The bytes on the wire outside ssh: TCP payloads joined per (port, connection, direction),
    and every other frame whole (keyed by its index); and how many ssh frames there were."""
    streams: dict = defaultdict(bytearray)
    ssh_frames = 0
    for index, (port, frame) in enumerate(_records(capture)):
        tcp = _tcp(frame)
        if tcp is None:
            streams[(port, index)] += frame
            continue
        src, dst, sport, dport, payload = tcp
        if SSH_PORT in (sport, dport):
            ssh_frames += 1
            continue
        streams[(port, src, dst, sport, dport)] += payload
    return streams, ssh_frames


@pytest.mark.parametrize("on_launcher", [False, True], ids=["remote-only", "with-local-node"])
def test_the_secret_crosses_the_network_only_inside_ssh(cluster, distrcomp, addresses, tmp_path,
                                                        no_survivors, on_launcher):
    capture = tmp_path / "capture.bin"
    sniffer = subprocess.Popen(
        ["ip", "netns", "exec", cluster.switch_ns, sys.executable, str(HERE / "capture.py"),
         str(capture)], stdout=subprocess.PIPE, text=True)
    keys = KeyFiles()
    try:
        assert sniffer.stdout.readline().strip() == "ready"
        peers = addresses[:2] + ([cluster.launcher_address] if on_launcher else [])
        run = distrcomp(peers, "--", sys.executable, str(HERE / "programs" / "own_secret.py"),
                        str(tmp_path))
    finally:
        sniffer.terminate()
        sniffer.wait(timeout=30)
        from_files = keys.stop()
    assert run.returncode == 0, run
    secrets = {path.read_bytes() for path in tmp_path.glob("secret-*")} | from_files
    assert secrets and all(len(secret) == 64 for secret in secrets), secrets
    left = [path for path in keys.paths if Path(path).parent.exists()]
    assert not left, f"the job's key was left behind: {left}"
    streams, ssh_frames = outside_ssh(capture.read_bytes())
    # the capture saw the job: ssh, and the relay's connections with each node's output
    assert ssh_frames > 0
    for node in range(len(peers)):
        if not (on_launcher and node == len(peers) - 1):  # that one's output stays on this host
            assert any(f"relayed-marker-{node}".encode() in data for data in streams.values()), \
                f"node {node}'s output was not seen on the bridge"
    for secret in secrets:
        for form in (secret, bytes.fromhex(secret.decode())):
            leaked = [key for key, data in streams.items() if form in data]
            assert not leaked, f"the secret crossed the bridge outside ssh: {leaked}"

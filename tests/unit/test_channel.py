"""The node → launcher channel: mutual authentication by the job secret, and framing."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

import pytest

from distrcomp.launcher import channel
from distrcomp.launcher.channel import ChannelError, FrameReader, ServerHandshake


def _listen_once(serve) -> tuple[socket.socket, threading.Thread, str]:
    """A loopback listener whose one connection ``serve(conn)`` handles in a thread; returns
    the listener, the thread and the address to connect to."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def accept() -> None:
        conn, _ = listener.accept()
        with conn:
            serve(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    return listener, thread, channel.format_address("127.0.0.1", listener.getsockname()[1])


def _serve_once(secret: str, result: dict, verify=None
                ) -> tuple[socket.socket, threading.Thread, str]:
    """A one-connection launcher side on loopback (checking credentials with ``verify`` if
    given); ``result`` gets ``(node id, stream)`` or the error."""

    def serve(conn: socket.socket) -> None:
        handshake = ServerHandshake(secret, verify=verify)
        conn.sendall(handshake.greeting)
        try:
            node = None
            while node is None:
                data = conn.recv(4096)
                if not data:
                    result["error"] = "closed"
                    return
                node = handshake.feed(data)
            conn.sendall(handshake.reply)
            result["node"] = node
            result["frames"] = FrameReader().feed(conn.recv(4096))
        except ChannelError as exc:
            result["error"] = str(exc)

    return _listen_once(serve)


def _node_says(handshake: ServerHandshake, secret: str, node: int, stream: int,
               claimed_stream: int) -> bytes:
    """What a node sends to prove ``(node, stream)``, claiming ``claimed_stream`` in the clear."""
    launcher_nonce = handshake.greeting[len(channel.MAGIC):]
    node_nonce = b"n" * 32
    proof = channel._proof(secret, b"node", launcher_nonce, node_nonce, node, stream)
    return node.to_bytes(4, "big") + bytes([claimed_stream]) + node_nonce + proof


def test_right_secret_authenticates_both_ways():
    secret = channel.new_secret()
    result: dict = {}
    listener, thread, address = _serve_once(secret, result)
    sock = channel.connect(address, secret, node=5)
    sock.sendall(channel.encode(channel.OUT, b"hello\n") + channel.encode_exit(0))
    thread.join(10)
    sock.close()
    listener.close()
    assert result["node"] == (5, channel.CONTROL)
    assert result["frames"] == [(channel.OUT, b"hello\n"), (channel.EXIT, b'{"returncode": 0}')]


@pytest.mark.parametrize("stream", [channel.OUT, channel.ERR])
def test_output_streams_are_named_in_the_proof(stream):
    secret = channel.new_secret()
    result: dict = {}
    listener, thread, address = _serve_once(secret, result)
    sock = channel.connect(address, secret, node=3, stream=stream)
    sock.sendall(b"raw bytes, no frames\n")
    thread.join(10)
    sock.close()
    listener.close()
    assert result["node"] == (3, stream)


def test_a_proof_for_one_stream_does_not_pass_for_another():
    # the stream byte is covered by the HMAC: a proof replayed with another stream fails
    secret = channel.new_secret()
    handshake = ServerHandshake(secret)
    with pytest.raises(ChannelError, match="wrong proof"):
        handshake.feed(_node_says(handshake, secret, 1, channel.OUT, claimed_stream=channel.ERR))


def test_unknown_stream_is_rejected():
    secret = channel.new_secret()
    handshake = ServerHandshake(secret)
    with pytest.raises(ChannelError, match="unknown stream 9"):
        handshake.feed(_node_says(handshake, secret, 1, 9, claimed_stream=9))


def test_node_with_wrong_secret_is_rejected():
    result: dict = {}
    listener, thread, address = _serve_once(channel.new_secret(), result)
    with pytest.raises(ChannelError):
        channel.connect(address, channel.new_secret(), node=0, timeout=5)
    thread.join(10)
    listener.close()
    assert result == {"error": "wrong proof of the job secret"}


def test_node_refuses_a_listener_that_does_not_know_the_secret():
    # a listener that completes the handshake without the secret (say, one that squatted the
    # port): the node must not trust it
    def impostor(conn: socket.socket) -> None:
        conn.sendall(channel.MAGIC + b"\0" * 32)
        conn.recv(4096)
        conn.sendall(b"\0" * 32)

    listener, thread, address = _listen_once(impostor)
    with pytest.raises(ChannelError, match="does not know the job secret"):
        channel.connect(address, channel.new_secret(), node=0, timeout=5)
    thread.join(10)
    listener.close()


def test_handshake_rejects_extra_bytes_before_authentication():
    handshake = ServerHandshake(channel.new_secret())
    with pytest.raises(ChannelError, match="before being authenticated"):
        handshake.feed(b"\0" * (ServerHandshake.SIZE + 1))


def test_frame_reader_reassembles_and_limits():
    frames = channel.encode(channel.OUT, b"a\n") + channel.encode(channel.ERR, b"b\n")
    reader = FrameReader()
    got = []
    for i in range(len(frames)):  # byte by byte
        got += reader.feed(frames[i:i + 1])
    assert got == [(channel.OUT, b"a\n"), (channel.ERR, b"b\n")]
    with pytest.raises(ChannelError, match="exceeds the limit"):
        FrameReader().feed(bytes([channel.OUT]) + (channel.MAX_FRAME + 1).to_bytes(4, "big"))


def test_addresses_round_trip():
    assert channel.parse_address(channel.format_address("::1", 80)) == ("::1", 80)
    assert channel.parse_address("10.0.0.1:5") == ("10.0.0.1", 5)
    with pytest.raises(ChannelError):
        channel.parse_address("nohost")


@pytest.mark.parametrize("payload, code", [
    (b'{"returncode": 0}', 0), (b'{"returncode": 137}', 137), (b'{"returncode": -9}', -9),
    (b'{"returncode":3}', 3), (b'{ "returncode" : 4 }', 4), (b'{"returncode": 5, "more": 1}', 5),
])
def test_exit_returncode_reads_what_a_wrapper_reports(payload, code):
    assert channel.exit_returncode(payload) == code


@pytest.mark.parametrize("payload, error", [
    (b"", ValueError), (b"garbage", ValueError), (b'{"returncode": "x"}', ValueError),
    (b'{"returncode": --1}', ValueError), (b"{}", KeyError), (b'{"returncode": null}', TypeError),
])
def test_exit_returncode_refuses_a_payload_without_one(payload, error):
    with pytest.raises(error):
        channel.exit_returncode(payload)


@pytest.mark.parametrize("code", [0, 1, 137, 255, -9, -15])
def test_exit_frame_is_json_read_back_as_written(code):
    import json

    ((kind, payload),) = FrameReader().feed(channel.encode_exit(code))
    assert kind == channel.EXIT and json.loads(payload) == {"returncode": code}
    assert channel.exit_returncode(payload) == code


def test_exit_frame_is_written_and_read_without_json():
    # the wrapper writes it as its command ends and the launcher reads it while other nodes
    # may still run: no 2 ms import of json in either
    code = ("import sys; from distrcomp.launcher import channel; "
            "((_, payload),) = channel.FrameReader().feed(channel.encode_exit(-15)); "
            "assert channel.exit_returncode(payload) == -15; "
            "print('json' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_take_secret_reads_the_key_file_and_removes_both_variables(tmp_path):
    # across hosts the nodes get the path of the key file the launcher wrote over ssh (.jobkey)
    key = tmp_path / "key"
    key.write_text("ab" * 32 + "\n")
    environ = {channel.ENV_SECRET_FILE: str(key), "OTHER": "1"}
    assert channel.take_secret(environ) == "ab" * 32
    assert environ == {"OTHER": "1"}
    environ = {channel.ENV_SECRET: "cd" * 32, channel.ENV_SECRET_FILE: str(key)}
    assert channel.take_secret(environ) == "cd" * 32 and environ == {}
    with pytest.raises(KeyError, match=channel.ENV_SECRET):
        channel.take_secret({})
    with pytest.raises(OSError):
        channel.take_secret({channel.ENV_SECRET_FILE: str(tmp_path / "missing")})


def test_the_job_key_is_written_private_and_removed(tmp_path):
    from distrcomp.launcher.jobkey import JobKey

    key = JobKey(["localhost"], [True], base=str(tmp_path))
    key.write_here()
    path = tmp_path / key.path
    assert path.read_text() == key.secret + "\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert key.remove() == []
    assert list(tmp_path.iterdir()) == []


def test_waiting_pushes_out_the_oldest_never_the_newcomer():
    waiting = channel.Waiting(limit=3, timeout=5.0)
    assert [waiting.add(key, now=float(key)) for key in range(3)] == [[], [], []]
    assert waiting.add("node", now=3.0) == [0]  # the flood's oldest makes room
    assert waiting.add(4, now=3.5) == [1]
    assert len(waiting) == 3
    waiting.discard("node")  # it proved itself
    waiting.discard("node")  # and nothing happens twice
    assert len(waiting) == 2
    assert waiting.pop_oldest() == 2
    assert waiting.pop_oldest() == 4
    with pytest.raises(KeyError):
        waiting.pop_oldest()


def test_waiting_expires_in_order_of_arrival():
    waiting = channel.Waiting(limit=1024, timeout=5.0)
    for key in range(1000):
        waiting.add(key, now=key / 1000)
    assert waiting.expired(now=5.0) == []
    assert waiting.expired(now=5.0005) == [0]
    assert waiting.expired(now=5.1) == list(range(1, 100))
    assert len(waiting) == 900


# -- inside a Slurm allocation: a MUNGE credential instead of the secret -----------------------
# A fake MUNGE: the "credential" is the payload behind a prefix, and the verifier checks that
# prefix and payload, as unmunge checks the real ones (see tests/slurm for those).


def _fake_credential(payload: bytes) -> bytes:
    return b"CRED:" + payload


def _fake_verify(credential: bytes, payload: bytes) -> None:
    if credential != b"CRED:" + payload:
        raise ChannelError("credential for another challenge")


def _serve_munge_once(result: dict) -> tuple[socket.socket, threading.Thread, str]:
    return _serve_once(channel.new_secret(), result, verify=_fake_verify)


def _credential_says(handshake: ServerHandshake, node: int, stream: int, credential: bytes
                     ) -> bytes:
    return (node.to_bytes(4, "big") + bytes([stream]) + len(credential).to_bytes(2, "big")
            + credential)


@pytest.mark.parametrize("stream", [channel.CONTROL, channel.OUT, channel.ERR])
def test_a_credential_for_this_challenge_node_and_stream_authenticates(stream):
    result: dict = {}
    listener, thread, address = _serve_munge_once(result)
    sock = channel.connect(address, _fake_credential, node=4, stream=stream)
    sock.sendall(channel.encode(channel.OUT, b"hello\n"))
    thread.join(10)
    sock.close()
    listener.close()
    assert result["node"] == (4, stream)
    assert result["frames"] == [(channel.OUT, b"hello\n")]


def test_the_payload_binds_challenge_node_and_stream():
    handshake = ServerHandshake(channel.new_secret(), verify=_fake_verify)
    nonce = handshake.greeting[len(channel.MAGIC):]
    payloads = {channel.munge_payload(nonce, 1, channel.OUT),
                channel.munge_payload(nonce, 2, channel.OUT),
                channel.munge_payload(nonce, 1, channel.ERR),
                channel.munge_payload(b"x" * 32, 1, channel.OUT)}
    assert len(payloads) == 4


def test_a_credential_for_another_challenge_or_node_is_refused():
    first = ServerHandshake(channel.new_secret(), verify=_fake_verify)
    second = ServerHandshake(channel.new_secret(), verify=_fake_verify)
    # made for the first connection's challenge, replayed on the second
    credential = _fake_credential(
        channel.munge_payload(first.greeting[len(channel.MAGIC):], 0, channel.CONTROL))
    with pytest.raises(ChannelError, match="another challenge"):
        second.feed(_credential_says(second, 0, channel.CONTROL, credential))
    # the right challenge, claimed for another node
    with pytest.raises(ChannelError, match="another challenge"):
        first.feed(_credential_says(first, 1, channel.CONTROL, credential))


def test_a_credential_handshake_is_fed_in_pieces_and_limits_its_size():
    handshake = ServerHandshake(channel.new_secret(), verify=_fake_verify)
    nonce = handshake.greeting[len(channel.MAGIC):]
    data = _credential_says(handshake, 2, channel.ERR,
                            _fake_credential(channel.munge_payload(nonce, 2, channel.ERR)))
    assert [handshake.feed(data[i:i + 3]) for i in range(0, len(data), 3)][-1] == (2, channel.ERR)
    assert handshake.reply == channel.ACCEPTED
    too_long = ServerHandshake(channel.new_secret(), verify=_fake_verify)
    with pytest.raises(ChannelError, match="exceeds the limit"):
        too_long.feed(_credential_says(too_long, 0, 0, b"x" * (channel.MAX_CREDENTIAL + 1)))
    extra = ServerHandshake(channel.new_secret(), verify=_fake_verify)
    with pytest.raises(ChannelError, match="before being authenticated"):
        extra.feed(_credential_says(extra, 0, 0, b"x") + b"more")
    unknown = ServerHandshake(channel.new_secret(), verify=_fake_verify)
    with pytest.raises(ChannelError, match="unknown stream 7"):
        unknown.feed(_credential_says(unknown, 0, 7, b"x"))


def test_a_node_whose_credential_is_refused_gets_a_channel_error():
    result: dict = {}
    listener, thread, address = _serve_munge_once(result)
    with pytest.raises(ChannelError, match="closed the connection"):
        channel.connect(address, lambda payload: b"CRED:forged", node=0, timeout=5)
    thread.join(10)
    listener.close()
    assert result == {"error": "credential for another challenge"}


def test_munge_missing_on_a_node_is_a_sentence_naming_the_host(monkeypatch):
    from distrcomp.launcher import munge

    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(munge.MungeError, match=f"munge is not installed on {socket.gethostname()}"):
        munge.encode(b"payload")


def test_the_munged_socket_is_the_one_slurm_conf_names(tmp_path, monkeypatch):
    from distrcomp.launcher import munge

    conf = tmp_path / "slurm.conf"
    conf.write_text("# AuthInfo=socket=/not/this\nClusterName=x\n"
                    "AuthInfo=cred_expire=30, socket=/run/m/munge.sock  # comment\n")
    assert munge.slurm_socket(str(conf)) == "/run/m/munge.sock"
    monkeypatch.setenv("SLURM_CONF", str(conf))
    assert munge.slurm_socket() == "/run/m/munge.sock"
    conf.write_text("AuthType=auth/munge\n")
    assert munge.slurm_socket() is None
    assert munge.slurm_socket(str(tmp_path / "missing.conf")) is None

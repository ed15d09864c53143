"""The channel from each node's wrapper back to the launcher: authentication and framing.

Every node wrapper (:mod:`distrcomp.launcher.node`) opens a control connection to the launcher
(the launcher's orders, the node's exit status) and gives the launcher a stream for each of the
command's stdout and stderr, which the command gets as its file descriptors 1 and 2: output
travels from the command to the launcher with no process in between, and what a killed
command wrote is already on its way. When every node is on the launcher's machine the launcher
listens on a Unix socket in a private directory, and each stream is a pipe whose read end the
wrapper passes to the launcher over the control connection (``STREAMS``, with SCM_RIGHTS):
writing a line into a pipe costs a third of writing it into a socket. Across machines, each
stream is a TCP connection of its own. The launcher listens only for the duration of the job,
on the address the nodes need, and stops listening once every node is connected.

Authentication is mutual, by a per-job secret that never crosses the network outside ssh and
never appears on a command line: on one machine it travels in the environment
(``DISTRCOMP_RELAY_SECRET``); in a job with remote hosts the launcher writes it into a private
file on each host over ssh and the nodes get the file's path (``DISTRCOMP_RELAY_SECRET_FILE``;
see :mod:`.jobkey`), because the MPI forwards the environment over plain TCP::

    launcher → node   MAGIC, launcher nonce (32 bytes)
    node → launcher   node id (u32), stream (u8), node nonce (32),
                      HMAC(secret, "node" | nonces | id | stream)
    launcher → node   HMAC(secret, "launcher" | nonces | id | stream)

Inside a Slurm allocation there is no ssh, so the secret never leaves the launcher's machine:
the nodes get only :data:`ENV_MUNGE` and answer the same greeting with a MUNGE credential
(:mod:`.munge`) whose payload is :func:`munge_payload` (the launcher's nonce, node id and
stream, in hex), which the launcher checks with a verifier it is given::

    node → launcher   node id (u32), stream (u8), length (u16), credential (length bytes)
    launcher → node   ACCEPTED

In that mode the launcher does not prove itself to the node: a node that reached a listener
other than the launcher's would hand it its output.

Proofs are compared with :func:`hmac.compare_digest`. A peer that fails, stalls or sends too
much is dropped before it can send a single frame. After that, on the ``CONTROL`` stream,
frames are ``kind`` (u8), ``length`` (u32, big-endian) and ``length`` bytes of payload; on the
``OUT`` and ``ERR`` streams, the bytes the command writes, as it writes them.
"""

from __future__ import annotations

import os
import struct

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: every node wrapper imports this
if TYPE_CHECKING:
    import _socket
    import socket
    from collections.abc import Callable
del TYPE_CHECKING
# socket only where a node's wrapper connects: the launcher uses socket's C part, _socket (see
# .job), and this module is on its way to starting mpiexec.

__all__ = [
    "BYE",
    "CONTROL",
    "DUMP",
    "ENV_ADDRESS",
    "ENV_JOB",
    "ENV_MUNGE",
    "ENV_NODE",
    "ENV_SECRET",
    "ENV_SECRET_FILE",
    "ENV_SLOTS",
    "ENV_WORKDIR",
    "ERR",
    "EXIT",
    "NO_REPORT",
    "OUT",
    "STOP",
    "STOP_GRACE",
    "STREAMS",
    "UNIX",
    "ChannelError",
    "FrameReader",
    "ServerHandshake",
    "Waiting",
    "connect",
    "encode",
    "encode_exit",
    "exit_returncode",
    "format_address",
    "keepalive",
    "munge_payload",
    "new_secret",
    "parse_address",
    "preload",
    "recv_fds",
    "take_secret",
]

ENV_ADDRESS = "DISTRCOMP_RELAY"  # host:port of the launcher's listener
ENV_SECRET = "DISTRCOMP_RELAY_SECRET"  # hex; removed from the environment of the user's command
# a job across hosts: the path of the file holding the secret instead (.jobkey); also removed
ENV_SECRET_FILE = "DISTRCOMP_RELAY_SECRET_FILE"
# inside a Slurm allocation, instead of the secret: nodes prove themselves with MUNGE; the
# value is the munged socket's path ("" for MUNGE's default). Also removed.
ENV_MUNGE = "DISTRCOMP_RELAY_MUNGE"
ENV_JOB = "DISTRCOMP_JOB"  # unique job id; every process of the job carries it
# "<job id>.<node id>", set by the node wrapper for its command: every process the command
# starts carries it, also one that leaves its process group (setsid, a daemon), so that the
# wrapper finds what the command left running
ENV_NODE = "DISTRCOMP_NODE"
ENV_WORKDIR = "DISTRCOMP_WORKDIR"  # --files: the job's directory (same path on every host)
ENV_SLOTS = "DISTRCOMP_WORKDIR_SLOTS"  # --files: nodes per host in peers order, e.g. "1,2,1"

# streams, named in the handshake; OUT and ERR are also the kinds of frames that carry the
# wrapper's own messages on the control stream
CONTROL, OUT, ERR = 0, 1, 2
# node → launcher
EXIT = 4  # EXIT's payload: JSON {"returncode": N}
STREAMS = 5  # no payload; carries the read ends of the stdout and stderr pipes (Unix socket only)
NO_REPORT = 6  # no payload; the answer to DUMP when no process of the node handles SIGUSR1
# launcher → node
STOP, DUMP, BYE = 10, 11, 12
STOP_GRACE = 3.0  # after STOP, seconds before the wrapper follows its signal with SIGKILL

MAGIC = b"DCR1"
_NONCE = 32
_MAC = 32
_HEADER = struct.Struct(">BI")
_WHO = struct.Struct(">IB")  # node id, stream
_LENGTH = struct.Struct(">H")  # of a MUNGE credential
MAX_CREDENTIAL = 4096  # a credential for a 74-byte payload is about 200
ACCEPTED = b"DCOK"  # the launcher's reply to a valid MUNGE credential
_FD = struct.Struct("i")  # a descriptor in SCM_RIGHTS, as the C int it is
KEEPALIVE_IDLE = 5  # seconds of silence on a connection before the first probe
KEEPALIVE_INTERVAL = 5  # between unanswered probes; after 3 the connection is dead
MAX_FRAME = 8 << 20  # a frame carries at most one read of a pipe, far below this
UNIX = "unix:"  # prefix of a launcher address that is a Unix socket's path


class ChannelError(Exception):
    """The channel could not be set up or broke its protocol (bad proof, bad frame, closed)."""


def keepalive(sock: _socket.socket) -> None:
    """Let the kernel probe an idle connection, so that a peer whose host vanished (cable,
    power) ends it after about KEEPALIVE_IDLE + 3 * KEEPALIVE_INTERVAL seconds instead of never:
    the launcher then sees a lost node, a node sees a lost launcher."""
    import _socket

    sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
                        ("TCP_KEEPCNT", 3)):
        if hasattr(_socket, name):  # Linux and others; elsewhere the system's defaults apply
            sock.setsockopt(_socket.IPPROTO_TCP, getattr(_socket, name), value)


def recv_fds(sock: _socket.socket, size: int, max_fds: int) -> tuple[bytes, list[int]]:
    """Receive up to ``size`` bytes and up to ``max_fds`` descriptors passed with them
    (SCM_RIGHTS; ``socket.recv_fds``, for a socket of ``_socket``). Blocks as ``sock`` does.
    The descriptors are new, close-on-exec, and the caller's to close. Raises OSError."""
    import _socket

    data, ancillary, _, _ = sock.recvmsg(size, _socket.CMSG_LEN(max_fds * _FD.size),
                                         _socket.MSG_CMSG_CLOEXEC)
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            whole = len(payload) - len(payload) % _FD.size
            fds += (value for (value,) in _FD.iter_unpack(payload[:whole]))
    return data, fds


def new_secret() -> str:
    """A fresh per-job secret, as hex text for the environment."""
    return os.urandom(32).hex()


def take_secret(environ: dict[str, str]) -> str:
    """Remove the job's secret from ``environ`` (``os.environ``: the node wrapper's) and return
    it: :data:`ENV_SECRET` itself, else the first line of the file :data:`ENV_SECRET_FILE`
    names. Both variables are removed whichever is used. Raises KeyError naming
    :data:`ENV_SECRET` if neither is set, OSError if the file cannot be read."""
    secret = environ.pop(ENV_SECRET, None)
    path = environ.pop(ENV_SECRET_FILE, None)
    if secret is not None:
        return secret
    if path is None:
        raise KeyError(ENV_SECRET)
    with open(path) as handle:
        return handle.readline().strip()


def _proof(
    secret: str, role: bytes, launcher_nonce: bytes, node_nonce: bytes, node: int, stream: int
) -> bytes:
    import hashlib  # see preload
    import hmac

    message = role + launcher_nonce + node_nonce + _WHO.pack(node, stream)
    return hmac.new(bytes.fromhex(secret), message, hashlib.sha256).digest()


def preload() -> None:
    """Import what proofs need (hashlib loads OpenSSL: ~2.5 ms). Not at the top of this module:
    the launcher starts mpiexec first and calls this while mpiexec starts the nodes, before the
    first of them connects, so that neither the start of mpiexec nor a node waits for it."""
    import hashlib  # noqa: F401
    import hmac  # noqa: F401


def _same(a: bytes, b: bytes) -> bool:
    """``hmac.compare_digest``: a comparison whose time does not depend on where they differ."""
    import hmac

    return hmac.compare_digest(a, b)


def encode(kind: int, payload: bytes = b"") -> bytes:
    """One frame."""
    return _HEADER.pack(kind, len(payload)) + payload


_EXIT_HEAD, _EXIT_TAIL = b'{"returncode": ', b"}"  # the EXIT payload the wrapper writes


def encode_exit(returncode: int) -> bytes:
    """The EXIT frame reporting ``returncode``: JSON ``{"returncode": N}``, written in the one
    form that :func:`exit_returncode` reads without ``json``."""
    return encode(EXIT, _EXIT_HEAD + str(int(returncode)).encode() + _EXIT_TAIL)


def exit_returncode(payload: bytes) -> int:
    """The return code in an EXIT payload (JSON ``{"returncode": N}``). Raises ValueError,
    KeyError or TypeError if there is none.

    The form :func:`encode_exit` writes is read without ``json`` (its import costs ~2 ms of
    CPU, in the launcher while other nodes still run, and in every node's wrapper before);
    any other JSON is read with it.
    """
    if payload.startswith(_EXIT_HEAD) and payload.endswith(_EXIT_TAIL):
        number = payload[len(_EXIT_HEAD):-len(_EXIT_TAIL)]
        if number.lstrip(b"-").isdigit():
            return int(number)
    import json

    return int(json.loads(payload)["returncode"])


class FrameReader:
    """Cuts a byte stream into frames. Not thread-safe; one per connection."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Add received bytes; return the frames now complete, in order.

        Raises ChannelError for a frame longer than MAX_FRAME.
        """
        self._buffer += data
        frames = []
        start = 0
        buffer = self._buffer
        while len(buffer) - start >= _HEADER.size:
            kind, length = _HEADER.unpack_from(buffer, start)
            if length > MAX_FRAME:
                raise ChannelError(f"frame of {length} bytes exceeds the limit of {MAX_FRAME}")
            end = start + _HEADER.size + length
            if len(buffer) < end:
                break
            frames.append((kind, bytes(buffer[start + _HEADER.size:end])))
            start = end
        if start:
            del buffer[:start]
        return frames


def munge_payload(launcher_nonce: bytes, node: int, stream: int) -> bytes:
    """What a node's MUNGE credential must carry for this greeting, node and stream."""
    return (launcher_nonce + _WHO.pack(node, stream)).hex().encode()


class ServerHandshake:
    """The launcher's side of one connection's handshake, fed bytes as they arrive.

    Send :attr:`greeting` first. :meth:`feed` returns None while the node's proof is
    incomplete, then the authenticated ``(node id, stream)``; send :attr:`reply` after that.

    With ``verify`` (inside a Slurm allocation) the node proves itself with a MUNGE
    credential instead of the secret: ``verify(credential, payload)`` must return if the
    credential is valid and carries ``payload``, else raise ChannelError saying why.
    """

    SIZE = _WHO.size + _NONCE + _MAC  # what the node sends; never more before the reply

    def __init__(self, secret: str,
                 verify: Callable[[bytes, bytes], None] | None = None) -> None:
        self._secret = secret
        self._verify = verify
        self._nonce = os.urandom(_NONCE)
        self._buffer = b""
        self.greeting = MAGIC + self._nonce
        self.reply = b""

    def feed(self, data: bytes) -> tuple[int, int] | None:
        """Consume handshake bytes. Raises ChannelError if the proof is wrong or too long, or
        names a stream that does not exist."""
        self._buffer += data
        if self._verify is not None:
            return self._feed_credential()
        if len(self._buffer) > self.SIZE:
            raise ChannelError("peer sent data before being authenticated")
        if len(self._buffer) < self.SIZE:
            return None
        node, stream = _WHO.unpack_from(self._buffer)
        node_nonce = self._buffer[_WHO.size:_WHO.size + _NONCE]
        mac = self._buffer[_WHO.size + _NONCE:]
        expected = _proof(self._secret, b"node", self._nonce, node_nonce, node, stream)
        if not _same(mac, expected):
            raise ChannelError("wrong proof of the job secret")
        if stream not in (CONTROL, OUT, ERR):
            raise ChannelError(f"unknown stream {stream}")
        self.reply = _proof(self._secret, b"launcher", self._nonce, node_nonce, node, stream)
        return node, stream

    def _feed_credential(self) -> tuple[int, int] | None:
        head = _WHO.size + _LENGTH.size
        if len(self._buffer) < head:
            return None
        (length,) = _LENGTH.unpack_from(self._buffer, _WHO.size)
        if length > MAX_CREDENTIAL:
            raise ChannelError(f"credential of {length} bytes exceeds the limit of "
                               f"{MAX_CREDENTIAL}")
        if len(self._buffer) > head + length:
            raise ChannelError("peer sent data before being authenticated")
        if len(self._buffer) < head + length:
            return None
        node, stream = _WHO.unpack_from(self._buffer)
        if stream not in (CONTROL, OUT, ERR):
            raise ChannelError(f"unknown stream {stream}")
        assert self._verify is not None
        self._verify(self._buffer[head:], munge_payload(self._nonce, node, stream))
        self.reply = ACCEPTED
        return node, stream


class Waiting:
    """The launcher's connections still in their handshake, oldest first; keys and times only.

    Each may take ``timeout`` seconds to prove itself (:meth:`expired`). At most ``limit`` wait
    at once: one more pushes the oldest out (:meth:`add`), never the newcomer. So connections
    that never prove anything (idle, garbage, slow: a flood) cannot lock a real node out:
    a node proves itself within one round trip of connecting, and would be pushed out only if
    ``limit`` other connections arrived in that time.
    """

    def __init__(self, limit: int, timeout: float) -> None:
        self.limit = limit
        self.timeout = timeout
        self._deadlines: dict[object, float] = {}  # in order of arrival, so of deadline

    def __len__(self) -> int:
        return len(self._deadlines)

    def add(self, key: object, now: float) -> list[object]:
        """``key`` arrived at ``now``; return the keys pushed out to make room (oldest first)."""
        self._deadlines[key] = now + self.timeout
        pushed = []
        while len(self._deadlines) > self.limit:
            pushed.append(self.pop_oldest())
        return pushed

    def discard(self, key: object) -> None:
        """``key`` is done with its handshake (or closed); nothing if it was not waiting."""
        self._deadlines.pop(key, None)

    def pop_oldest(self) -> object:
        """Remove and return the key that has waited longest. Raises KeyError if none waits."""
        oldest = next(iter(self._deadlines), None)
        if oldest is None:
            raise KeyError("no connection is waiting")
        del self._deadlines[oldest]
        return oldest

    def expired(self, now: float) -> list[object]:
        """Remove and return, oldest first, the keys whose time ran out before ``now``."""
        late = []
        for key, deadline in self._deadlines.items():
            if deadline >= now:
                break
            late.append(key)
        for key in late:
            del self._deadlines[key]
        return late


def connect(
    address: str, secret: str | Callable[[bytes], bytes], node: int, stream: int = CONTROL,
    timeout: float = 30.0,
) -> socket.socket:
    """Node side: connect to the launcher at ``address`` (``host:port``, or ``unix:PATH``) as
    ``stream`` of ``node``, proving it with ``secret`` or, inside a Slurm allocation, with the
    credential that ``secret(payload)`` makes (see :mod:`.munge`).

    Blocking, at most about ``timeout`` seconds. Returns the authenticated socket (blocking,
    no timeout). Raises ChannelError naming the address if the launcher is unreachable or
    does not prove it knows the secret (or refuses the credential); whatever ``secret``
    raises if it cannot make a credential.
    """
    import socket

    try:
        if address.startswith(UNIX):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(address[len(UNIX):])
            except OSError:
                sock.close()
                raise
        else:
            sock = socket.create_connection(parse_address(address), timeout=timeout)
            keepalive(sock)
    except OSError as exc:
        raise ChannelError(f"cannot connect to the launcher at {address}: {exc}") from None
    try:
        greeting = _recv_exactly(sock, len(MAGIC) + _NONCE)
        if greeting[:len(MAGIC)] != MAGIC:
            raise ChannelError(f"{address} is not a distrcomp launcher")
        launcher_nonce = greeting[len(MAGIC):]
        if not isinstance(secret, str):
            credential = secret(munge_payload(launcher_nonce, node, stream))
            sock.sendall(_WHO.pack(node, stream) + _LENGTH.pack(len(credential)) + credential)
            if _recv_exactly(sock, len(ACCEPTED)) != ACCEPTED:
                raise ChannelError(f"the listener at {address} did not accept the credential")
            sock.settimeout(None)
            return sock
        node_nonce = os.urandom(_NONCE)
        sock.sendall(
            _WHO.pack(node, stream) + node_nonce
            + _proof(secret, b"node", launcher_nonce, node_nonce, node, stream)
        )
        reply = _recv_exactly(sock, _MAC)
        expected = _proof(secret, b"launcher", launcher_nonce, node_nonce, node, stream)
        if not _same(reply, expected):
            raise ChannelError(f"the listener at {address} does not know the job secret")
    except (OSError, ChannelError) as exc:
        sock.close()
        if isinstance(exc, ChannelError):
            raise
        raise ChannelError(f"handshake with the launcher at {address} failed: {exc}") from None
    sock.settimeout(None)
    return sock


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ChannelError("the launcher closed the connection during the handshake")
        data += chunk
    return data


def format_address(host: str, port: int) -> str:
    """``host:port``, with brackets around an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(text: str) -> tuple[str, int]:
    """Inverse of :func:`format_address`. Raises ChannelError for a malformed address."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ChannelError(f"malformed launcher address {text!r} (expected host:port)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


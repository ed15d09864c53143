"""MUNGE credentials: how a node inside a Slurm allocation proves it belongs to the job.

Inside an allocation there is no ssh to carry the relay's key to the nodes (see
:mod:`.jobkey`), so the key stays on the launcher's machine and each node answers the relay's
challenge with a MUNGE credential whose payload is that challenge (:func:`encode`, the
``munge`` command on the node); the launcher checks it with :func:`decode` (``unmunge``) and
accepts it only if MUNGE says it is valid (right key, not expired, not replayed) and it was
made by the launcher's own user with the expected payload. Both are MUNGE's own command-line
tools: no cryptography here. Slurm itself trusts the same ``munged`` on every node.

The ``munged`` socket is the one Slurm uses: ``AuthInfo=socket=PATH`` in ``slurm.conf``
(:func:`slurm_socket`), else MUNGE's default. Each call runs one short process (~ms), once per
connection: three per node.
"""

from __future__ import annotations

import os
import socket
import subprocess

from .channel import ChannelError

__all__ = ["MungeError", "decode", "encode", "slurm_socket"]

_TIMEOUT = 10.0  # seconds for munge/unmunge; munged answers in milliseconds
_MAX_CREDENTIAL = 4096


class MungeError(ChannelError):
    """A credential could not be made or is not valid (the message says which and why)."""


def slurm_socket(conf: str | None = None) -> str | None:
    """The munged socket Slurm uses (``AuthInfo=socket=PATH`` in ``conf``, by default
    ``$SLURM_CONF`` or ``/etc/slurm/slurm.conf``), or None for MUNGE's default. A missing or
    unreadable file means the default."""
    path = conf or os.environ.get("SLURM_CONF") or "/etc/slurm/slurm.conf"
    try:
        with open(path) as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    for line in lines:
        name, _, value = line.split("#", 1)[0].partition("=")
        if name.strip().lower() != "authinfo":
            continue
        for item in value.strip().split(","):
            key, _, setting = item.partition("=")
            if key.strip().lower() == "socket" and setting.strip():
                return setting.strip()
    return None


def _run(tool: str, socket_path: str | None, data: bytes, args: tuple[str, ...] = ()
         ) -> subprocess.CompletedProcess:
    argv = [tool, *args]
    if socket_path:
        argv += ["--socket", socket_path]
    where = socket.gethostname()
    try:
        return subprocess.run(argv, input=data, capture_output=True, timeout=_TIMEOUT, check=False)
    except FileNotFoundError:
        raise MungeError(f"{tool} is not installed on {where} (Debian/Ubuntu: apt install "
                         "munge)") from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MungeError(f"{tool} failed on {where}: {exc}") from None


# unmunge's exit status for the credentials it refuses without a message (munge_err_t)
_STATUS = {15: "credential expired", 16: "credential from the future (clocks differ?)",
           17: "credential replayed", 18: "credential for another user"}


def _failure(tool: str, result: subprocess.CompletedProcess) -> MungeError:
    text = (result.stderr.decode(errors="replace").strip()
            or _STATUS.get(result.returncode, f"exit status {result.returncode}"))
    return MungeError(f"{tool} on {socket.gethostname()}: {text}")


def encode(payload: bytes, socket_path: str | None = None) -> bytes:
    """A MUNGE credential (ASCII) carrying ``payload``, made by this process's user through
    the munged at ``socket_path`` (None: MUNGE's default). Blocking, ~ms. Raises MungeError
    naming this host if ``munge`` is missing or fails (e.g. munged not running)."""
    result = _run("munge", socket_path, payload)
    if result.returncode != 0:
        raise _failure("munge", result)
    return result.stdout.strip()


def decode(credential: bytes, payload: bytes, socket_path: str | None = None) -> None:
    """Check ``credential``: valid for MUNGE (its key, not expired, never decoded before),
    made by this process's uid, carrying exactly ``payload``. Blocking, ~ms. Returns None;
    raises MungeError saying what failed."""
    if len(credential) > _MAX_CREDENTIAL:
        raise MungeError(f"credential of {len(credential)} bytes is too long")
    result = _run("unmunge", socket_path, credential, ("--numeric", "--keys=UID"))
    if result.returncode != 0:
        raise _failure("unmunge", result)
    # stdout: the metadata lines ("UID: 0"), an empty line, then the payload as it was sent
    head, sep, body = result.stdout.partition(b"\n\n")
    if not sep:
        raise MungeError("unmunge printed no payload")
    uid = None
    for line in head.splitlines():
        key, _, value = line.partition(b":")
        if key.strip() == b"UID":
            uid = value.strip()
    if uid != str(os.getuid()).encode():
        raise MungeError(f"credential of uid {(uid or b'?').decode()}, not the launcher's "
                         f"{os.getuid()}")
    if body != payload:
        raise MungeError("credential for another challenge")

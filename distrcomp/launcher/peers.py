"""peers.txt → ``[Host(name, slots, line)]``: which machines run the nodes, and how many each.

One host per line, in node order::

    # comments and blank lines are ignored
    10.0.0.2              # one slot (one node)
    10.0.0.3 slots=4      # Open MPI / DeepSpeed style
    node-7.cluster:2      # MPICH style
    fe80::1 slots=2       # IPv6; with MPICH style it needs brackets: [fe80::1]:2

A host is an IPv4 address, an IPv6 address or an RFC 1123 host name. Node ids follow file order:
the first host's slots hold nodes 0, 1, ..., then the next host's. Any malformed line raises
:class:`PeersFileError` naming the file, the line and what is wrong; nothing else is raised.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import NamedTuple

__all__ = ["MAX_BYTES", "MAX_SLOTS", "Host", "PeersFileError", "node_hosts", "parse_peers",
           "read_peers"]

MAX_SLOTS = 4096  # far above any real machine; stops `slots=10**12` from planning absurd jobs
MAX_BYTES = 1 << 20  # a peers file of 4096 hosts with comments is far below; /dev/zero is not

_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_DIGITS = re.compile(r"[0-9]+\Z")
_DOTTED_NUMBERS = re.compile(r"[0-9.]+\Z")


class PeersFileError(ValueError):
    """A peers file cannot be used. ``line`` is 1-based (0: the file as a whole, e.g. unreadable)."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        where = f"{path}:{line}" if line > 0 else str(path)
        super().__init__(f"{where}: {reason}")
        self.path = str(path)
        self.line = line
        self.reason = reason


class Host(NamedTuple):
    """One line of a peers file: ``name`` (as written; IPv6 without brackets), ``slots`` (nodes
    on it, at least 1) and the 1-based ``line`` it came from (0 when not from a file)."""

    name: str
    slots: int
    line: int

    @property
    def is_ipv6(self) -> bool:
        """True if ``name`` is an IPv6 address."""
        return ":" in self.name


def read_peers(path: str | Path) -> list[Host]:
    """Read and parse the peers file at ``path`` (see the module docstring for the format).

    Reads at most :data:`MAX_BYTES` + 1 bytes, so that a huge or endless file (``/dev/zero``)
    is refused at once. Raises PeersFileError for an unreadable file (line 0), binary data or
    a file larger than :data:`MAX_BYTES` (the line where that shows), or any malformed line.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise PeersFileError(str(path), 0, f"cannot read: {exc.strerror or exc}") from None
    nul = data.find(b"\0")
    if nul >= 0:
        raise PeersFileError(str(path), data.count(b"\n", 0, nul) + 1,
                             "binary data (a NUL byte): a peers file is text, one host per line")
    if len(data) > MAX_BYTES:
        raise PeersFileError(str(path), data.count(b"\n", 0, MAX_BYTES) + 1,
                             f"the file is larger than {MAX_BYTES} bytes: a peers file lists "
                             "hosts, one per line")
    return parse_peers(data, str(path))


def parse_peers(data: bytes | str, path: str = "peers.txt") -> list[Host]:
    """Parse the text of a peers file; ``path`` only names it in errors.

    Returns the hosts in file order (at least one). Raises PeersFileError, with the 1-based line
    number, for: bytes that are not UTF-8, control characters, a bad host, a bad or repeated slot
    count, unknown words after the host, a host listed twice, or a file without any host.
    """
    if isinstance(data, bytes):
        text = _decode(data, path)
    else:
        text = data
    hosts: list[Host] = []
    seen: dict[str, int] = {}
    lines = text.split("\n")
    for number, raw in enumerate(lines, start=1):
        line = raw.removesuffix("\r")
        host = _parse_line(line, number, path)
        if host is None:
            continue
        key = _identity(host.name)
        if key in seen:
            raise PeersFileError(path, number, f"duplicate host {host.name!r} (first on line {seen[key]})")
        seen[key] = number
        hosts.append(host)
    if not hosts:
        last = max(1, len(lines) - (1 if text.endswith("\n") else 0))
        what = "the file is empty" if not text.strip() else "only comments and blank lines"
        raise PeersFileError(path, last, f"no host in the file ({what})")
    return hosts


def node_hosts(hosts: list[Host], n: int | None = None) -> list[str]:
    """Host name of each node id: hosts in file order, each repeated for its slots.

    ``n`` (default: all slots) takes the first ``n``. Raises ValueError if ``n`` is not positive
    or exceeds the total number of slots.
    """
    names = [host.name for host in hosts for _ in range(host.slots)]
    if n is None:
        return names
    if n < 1:
        raise ValueError(f"the number of nodes must be positive, got {n}")
    if n > len(names):
        raise ValueError(f"{n} nodes asked for, but the peers file offers only {len(names)} slots")
    return names[:n]


def _decode(data: bytes, path: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise PeersFileError(path, line, f"not UTF-8 text (byte 0x{data[exc.start]:02x})") from None


def _parse_line(line: str, number: int, path: str) -> Host | None:
    def fail(reason: str) -> PeersFileError:
        return PeersFileError(path, number, reason)

    content, hash_sign, _ = line.partition("#")
    if hash_sign and content and not content[-1].isspace():
        word = content.split()[-1] if content.split() else content
        raise fail(f"'#' right after {word!r}: a comment starts with '#' after a space, and "
                   "'#' cannot be part of a host name")
    for char in content:
        if (ord(char) < 32 and char != "\t") or ord(char) == 127:
            raise fail(f"unexpected control character {char!r}")
        if ord(char) > 127:
            raise fail(f"unexpected non-ASCII character {char!r} (host names are ASCII)")
    words = content.split()
    if not words:
        return None
    spec, options = words[0], words[1:]
    name, slots = _split_host_spec(spec, fail)
    for option in options:
        key, sep, value = option.partition("=")
        if not sep:
            raise fail(f"unexpected {option!r} after the host (expected slots=N)")
        if key != "slots":
            raise fail(f"unknown option {key!r} (only slots=N is understood)")
        if slots is not None:
            raise fail("the slot count is given twice")
        slots = _slot_count(value, fail)
    return Host(name, 1 if slots is None else slots, number)


def _split_host_spec(spec: str, fail) -> tuple:
    """``host``, ``host:N``, ``[v6]``, ``[v6]:N`` or a bare IPv6 address → (name, slots or None)."""
    if spec.startswith("["):
        inside, sep, rest = spec[1:].partition("]")
        if not sep:
            raise fail(f"missing ']' in {spec!r}")
        if not _is_ipv6(inside):
            raise fail(f"{inside!r} in brackets is not an IPv6 address")
        _check_unicast(ipaddress.IPv6Address(inside), fail)
        if not rest:
            return inside, None
        if not rest.startswith(":"):
            raise fail(f"unexpected {rest!r} after ']' (expected :N)")
        return inside, _slot_count(rest[1:], fail)
    if "@" in spec:
        raise fail(f"user names are not supported in {spec!r}; set the user in ~/.ssh/config")
    if "/" in spec:
        raise fail(f"{spec!r} is not a host: write the host name or address alone (no URL, "
                   "path or network prefix)")
    if spec.count(":") == 1:
        name, _, count = spec.partition(":")
        _check_name(name, fail)
        return name, _slot_count(count, fail)
    if ":" in spec:
        if not _is_ipv6(spec):
            raise fail(f"{spec!r} is not an IPv6 address (with a slot count write [address]:N)")
        _check_unicast(ipaddress.IPv6Address(spec), fail)
        return spec, None
    _check_name(spec, fail)
    return spec, None


def _check_name(name: str, fail) -> None:
    """Accept an IPv4 address or an RFC 1123 host name; raise ``fail(reason)`` otherwise."""
    if not name:
        raise fail("empty host name")
    if _DOTTED_NUMBERS.match(name):
        try:
            address = ipaddress.IPv4Address(name)
        except ValueError:
            raise fail(f"{name!r} is not a valid IPv4 address") from None
        _check_unicast(address, fail)
        return
    if len(name.rstrip(".")) > 253:
        raise fail(f"host name is longer than 253 characters ({len(name)})")
    for label in name.rstrip(".").split("."):
        if not _LABEL.match(label):
            raise fail(
                f"bad host name {name!r}: each dot-separated part must be 1-63 letters, digits "
                "or '-', not starting or ending with '-'"
            )


def _check_unicast(address: ipaddress.IPv4Address | ipaddress.IPv6Address, fail) -> None:
    """Refuse an address no single machine answers on (``0.0.0.0``, ``::``, multicast,
    broadcast): ssh and the MPI would fail later, without the line."""
    if address.is_unspecified or address.is_multicast or address == _BROADCAST:
        kind = "unspecified" if address.is_unspecified else "multicast or broadcast"
        raise fail(f"{str(address)!r} is not a host's address ({kind})")


_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def _slot_count(text: str, fail) -> int:
    if not _DIGITS.match(text) or not text.strip("0"):
        raise fail(f"slots must be a positive integer, got {text!r}")
    significant = text.lstrip("0")
    if len(significant) > len(str(MAX_SLOTS)) or int(significant) > MAX_SLOTS:
        raise fail(f"slots must be at most {MAX_SLOTS}, got {text!r}")
    return int(significant)


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _identity(name: str) -> str:
    """What makes two host entries the same host: normalised address, or case-folded name."""
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name.rstrip(".").lower()

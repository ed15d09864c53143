"""Which hosts are this machine, and which of its addresses the other hosts can reach it on.

Peers may not reach the launching machine by its host name (often it resolves to a loopback
address on them), so the launcher tells the MPI (and its own relay listener) an address: the
source address the kernel would use to reach the first remote peer. Finding it sends no packet
(a UDP socket's ``connect`` only looks up the route). ``--launcher-address`` overrides it.

Linux reads interface addresses and prefixes from ``ioctl``/``/proc``; elsewhere only the
address itself is known (no network for Open MPI's interface selection).
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import struct
from typing import NamedTuple

__all__ = ["AddressError", "LauncherAddress", "is_local", "local_addresses", "loopback_unheld",
           "resolve", "route_source", "validate"]

_SIOCGIFADDR = 0x8915
_SIOCGIFNETMASK = 0x891B


class AddressError(ValueError):
    """A host name does not resolve, a peer has no route, or an address is not this machine's."""


class LauncherAddress(NamedTuple):
    """The launcher's address for the peers, its interface and that interface's network
    (``network`` None when unknown, e.g. not on Linux)."""

    address: str
    interface: str | None
    network: str | None


def resolve(host: str) -> str:
    """The first address ``host`` (a name or an address) resolves to. Raises AddressError."""
    try:
        return socket.getaddrinfo(host, 22, type=socket.SOCK_STREAM)[0][4][0]
    except (OSError, UnicodeError) as exc:
        raise AddressError(f"cannot resolve host {host!r}: {exc}") from None


def route_source(host: str) -> str:
    """The local address the kernel would send from to reach ``host``. Sends nothing.

    Raises AddressError naming the host when it does not resolve or there is no route to it.
    """
    address = resolve(host)
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((address, 22))  # a UDP connect only looks up the route
            return probe.getsockname()[0]
    except OSError as exc:
        raise AddressError(f"no route from this machine to host {host!r} ({address}): "
                           f"{exc.strerror or exc}") from None


def _ipv4_interfaces() -> dict[str, tuple[str, str]]:
    """``{address: (interface, network)}`` for this machine's IPv4 addresses (Linux ioctls)."""
    try:
        import fcntl
    except ImportError:
        return {}
    found: dict[str, tuple[str, str]] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:
                address = socket.inet_ntoa(fcntl.ioctl(sock, _SIOCGIFADDR, request)[20:24])
                mask = socket.inet_ntoa(fcntl.ioctl(sock, _SIOCGIFNETMASK, request)[20:24])
            except OSError:  # no IPv4 address on this interface
                continue
            network = ipaddress.IPv4Network(f"{address}/{mask}", strict=False)
            found[address] = (name, str(network))
    return found


def _ipv6_interfaces() -> dict[str, tuple[str, str]]:
    """``{address: (interface, network)}`` for this machine's IPv6 addresses (/proc/net/if_inet6)."""
    found: dict[str, tuple[str, str]] = {}
    try:
        with open("/proc/net/if_inet6") as table:
            rows = [line.split() for line in table]
    except OSError:
        return found
    for row in rows:
        if len(row) < 6:
            continue
        address = ipaddress.IPv6Address(bytes.fromhex(row[0]))
        network = ipaddress.IPv6Network(f"{address}/{int(row[2], 16)}", strict=False)
        found[str(address)] = (row[5], str(network))
    return found


@functools.lru_cache(maxsize=1)
def local_addresses() -> dict[str, tuple[str, str]]:
    """This machine's addresses: ``{address: (interface, network)}`` (cached)."""
    return {**_ipv4_interfaces(), **_ipv6_interfaces()}


@functools.lru_cache(maxsize=1)
def _local_names() -> frozenset[str]:
    names = {"localhost", "localhost.localdomain", "ip6-localhost"}
    for name in (socket.gethostname(), socket.getfqdn()):
        names.add(name.lower())
        names.add(name.lower().split(".")[0])
    return frozenset(names)


def is_local(host: str) -> bool:
    """True if ``host`` is this machine: ``localhost``, a loopback address, this machine's name,
    or one of its addresses. Never resolves a name through DNS: a name that merely resolves to
    one of our addresses elsewhere is treated as remote (checked, not assumed)."""
    name = host.strip("[]").rstrip(".").lower()
    if name in _local_names():
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return address.is_loopback or str(address) in local_addresses()


def loopback_unheld(host: str) -> bool:
    """True if ``host`` is a loopback address that no interface holds (``127.0.0.2``): this
    machine to the kernel, but another host to the MPIs, which take a host as local only by
    its name or an address of an interface, and would start it over ssh."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return address.is_loopback and str(address) not in local_addresses()


def validate(address: str) -> LauncherAddress:
    """``address`` checked to be one of this machine's, with its interface and network.

    Raises AddressError saying so when it is not an address, or no interface of this machine
    holds it (the relay listener could not bind there, and no peer could reach it).
    """
    try:
        parsed = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        raise AddressError(f"{address!r} is not an IP address") from None
    text = str(parsed)
    known = local_addresses()
    if text in known:
        interface, network = known[text]
        return LauncherAddress(text, interface, network)
    family = socket.AF_INET6 if parsed.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((text, 0))
    except OSError as exc:
        raise AddressError(f"{text} is not an address of this machine "
                           f"({exc.strerror or exc})") from None
    return LauncherAddress(text, None, None)

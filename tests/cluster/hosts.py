"""Three ssh-reachable test hosts on this one machine, built from network namespaces.

Usable as a library (:class:`Cluster`, a context manager; ``tests/cluster/conftest.py`` wraps it in
a session fixture) and by hand::

    python tests/cluster/hosts.py up       # build, print what was built; leaves it running
    python tests/cluster/hosts.py status   # list this module's namespaces and temp dirs
    python tests/cluster/hosts.py down     # tear down hand-made clusters and leftovers of dead runs

Topology (every name below is created by this module; the root namespace gets no interface,
address or route)::

    dc-<pid>-<n>-sw   bridge br0, no address, no uplink: a frame only reaches the ports below
      |- p-ln --- dc-<pid>-<n>-ln  eth0  10.77.0.1/24   the launcher: run mpiexec here
      |                            side0 10.78.0.1/24   decoy (a veth to nowhere): no route to peers
      |- p-h1 --- dc-<pid>-<n>-h1  eth0  10.77.0.11/24  hostname h1, sshd on port 22
      |- p-h2 --- dc-<pid>-<n>-h2  eth0  10.77.0.12/24  hostname h2, sshd on port 22
      '- p-h3 --- dc-<pid>-<n>-h3  eth0  10.77.0.13/24  hostname h3, sshd on port 22

``<pid>`` is the owning process, ``<n>`` counts clusters within it.

The namespaces have no default route, so a packet to any other address fails locally with
"Network is unreachable"; the subnet can be the same in parallel runs since no two runs share a
namespace. The launcher namespace keeps the machine's hostname, which ``/etc/hosts`` maps to
127.0.0.1 in every namespace: exactly the situation where peers cannot reach the launcher by name.
Each namespace also gets ``/etc/netns/<ns>/hosts`` (bind-mounted over ``/etc/hosts`` by
``ip netns exec``) that adds ``h1``..``h3``.

Processes share the PID namespace with the rest of the machine; :meth:`Cluster.processes` tells
them apart by their network namespace.
"""

from __future__ import annotations

import argparse
import atexit
import ipaddress
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "SEPARATE_MACHINES",
    "Cluster",
    "ClusterUnavailable",
    "Host",
    "Proc",
    "cleanup_leftovers",
    "list_namespaces",
    "unavailable_reason",
]

PREFIX = "dc-"
SUBNET = "10.77.0.0/24"
DECOY = "10.78.0.1/24"
HOST_NAMES = ("h1", "h2", "h3")
SSHD = "/usr/sbin/sshd"
NETNS_ETC = Path("/etc/netns")
STATE = "cluster.json"
_TOOLS = ("ip", "unshare", "ssh", "ssh-keygen")
# The namespaces share one kernel, /dev/shm and the PID namespace. UCX (the MPICH wheel's netmod)
# sees one machine and moves rank-to-rank data through shared memory / cross-memory attach, never
# over the test network: the payload of a "multi-host" job would not cross the bridge at all.
# TCP only makes the hosts behave like separate machines. (Open MPI already uses TCP between them.)
SEPARATE_MACHINES = {"UCX_TLS": "tcp"}
_SEQ = itertools.count()  # several clusters in one process get distinct names


class ClusterUnavailable(RuntimeError):
    """This machine cannot build the test hosts (the message says why)."""


@dataclass(frozen=True)
class Host:
    """One test host: its hostname, its address on the test subnet and its network namespace."""

    name: str
    address: str
    netns: str


@dataclass(frozen=True)
class Proc:
    """A process seen in one namespace: pid, parent pid, executable name and argv."""

    pid: int
    ppid: int
    comm: str
    argv: list[str]

    @property
    def is_sshd(self) -> bool:
        """True for the sshd daemon and its per-connection children (not for what they run)."""
        return self.comm in ("sshd", "sshd-session") or self.argv[:1] == [SSHD]


def _run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise ClusterUnavailable(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def unavailable_reason() -> str | None:
    """Why this machine cannot host the test cluster, or None if it looks able to."""
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to create network namespaces"
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing tools: {', '.join(missing)} (apt-get install iproute2 openssh-client util-linux)"
    if not os.access(SSHD, os.X_OK):
        return f"no {SSHD} (apt-get install openssh-server)"
    return None


def list_namespaces() -> list[str]:
    """Names of the network namespaces this module made (any run), from ``ip netns list``."""
    done = _run(["ip", "netns", "list"], check=False)
    names = (line.split()[0] for line in done.stdout.splitlines() if line.strip())
    return sorted(name for name in names if name.startswith(PREFIX))


def _owner_pid(name: str) -> int | None:
    """The pid in a ``dc-<pid>-<n>-...`` name, or None if the name is not one of ours."""
    parts = name.split("-")
    if len(parts) < 3 or parts[0] + "-" != PREFIX or not parts[1].isdigit():
        return None
    return int(parts[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _netns_inode(netns: str) -> tuple | None:
    try:
        st = os.stat(f"/run/netns/{netns}")
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _read_proc(pid: int) -> Proc | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return None
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
    return Proc(pid, ppid, comm, argv)


def netns_processes(netns: str) -> list[Proc]:
    """Every process whose network namespace is ``netns`` (zombies and vanishing ones omitted)."""
    want = _netns_inode(netns)
    if want is None:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == want:
            proc = _read_proc(int(entry))
            if proc is not None and proc.argv:
                found.append(proc)
    return found


def _kill_netns_processes(
    netns: str, grace: float = 2.0, signals: Sequence[int] = (signal.SIGTERM, signal.SIGKILL)
) -> None:
    """Send each of ``signals`` in turn to every process in ``netns`` (default SIGTERM, then
    SIGKILL), waiting up to ``grace`` seconds after each for them to be gone."""
    for sig in signals:
        procs = netns_processes(netns)
        for proc in procs:
            try:
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while procs and time.monotonic() < deadline:
            time.sleep(0.05)
            procs = netns_processes(netns)
        if not procs:
            return


def _remove_netns(netns: str) -> None:
    _kill_netns_processes(netns)
    _run(["ip", "netns", "del", netns], check=False)
    shutil.rmtree(NETNS_ETC / netns, ignore_errors=True)


def _remove_empty_netns_etc() -> None:
    try:
        NETNS_ETC.rmdir()  # only if empty: another run's entries keep it
    except OSError:
        pass


def _leftover_dirs() -> Iterator[Path]:
    for path in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        if (path / STATE).exists():
            yield path


def cleanup_leftovers(include_live: bool = False) -> list[str]:
    """Remove namespaces, ``/etc/netns`` entries and temp dirs of runs whose owner has exited.

    Runs of a live process (a test session of another worktree, say) are kept unless
    ``include_live``. Returns the names removed.
    """
    removed = []
    me = os.getpid()
    for netns in list_namespaces():
        owner = _owner_pid(netns)
        if owner is not None and owner != me and (include_live or not _alive(owner)):
            _remove_netns(netns)
            removed.append(netns)
    for path in _leftover_dirs():
        owner = _owner_pid(path.name)
        if owner is not None and owner != me and (include_live or not _alive(owner)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
    if NETNS_ETC.is_dir():
        existing = set(list_namespaces())
        for path in NETNS_ETC.glob(f"{PREFIX}*"):
            if path.name not in existing:
                shutil.rmtree(path, ignore_errors=True)
    _remove_empty_netns_etc()
    return removed


@dataclass
class Cluster:
    """Three hosts h1..h3 with sshd, a launcher namespace, and the ssh files to reach them.

    ``up()`` builds everything (raises ClusterUnavailable, saying why, if it cannot) and registers
    an atexit teardown; ``down()`` kills every process in the namespaces, deletes them and the
    temp dir, and is idempotent. As a context manager: up on enter, down on exit.
    """

    subnet: str = SUBNET
    owner: int = field(default_factory=os.getpid)
    seq: int = field(default_factory=lambda: next(_SEQ))
    tmp: Path = Path()
    hosts: list[Host] = field(default_factory=list)
    _sshd: dict[str, subprocess.Popen] = field(default_factory=dict, repr=False)
    _is_up: bool = False

    # -- names and addresses -------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        """``dc-<owner pid>-<n>-``: the start of every namespace and temp dir name of this cluster."""
        return f"{PREFIX}{self.owner}-{self.seq}-"

    @property
    def switch_ns(self) -> str:
        """The namespace holding the bridge."""
        return self.prefix + "sw"

    @property
    def launcher_ns(self) -> str:
        """The namespace to run ``mpiexec`` / ``distrcomp run`` in (see :meth:`in_launcher`)."""
        return self.prefix + "ln"

    @property
    def network(self) -> ipaddress.IPv4Network:
        """The test subnet."""
        return ipaddress.IPv4Network(self.subnet)

    @property
    def prefixlen(self) -> int:
        """Length of the test subnet's prefix."""
        return self.network.prefixlen

    @property
    def launcher_address(self) -> str:
        """The launcher's address on its interface ``eth0``, the one that routes to the peers."""
        return str(self.network.network_address + 1)

    @property
    def launcher_iface(self) -> str:
        """The launcher's interface that routes to the peers."""
        return "eth0"

    @property
    def decoy_iface(self) -> str:
        """A second launcher interface (own subnet, a veth to nowhere) that does not reach the peers."""
        return "side0"

    @property
    def decoy_address(self) -> str:
        """The address on :attr:`decoy_iface`."""
        return DECOY.split("/")[0]

    @property
    def unused_address(self) -> str:
        """An address in the subnet that nothing holds: connecting to it gets no answer."""
        return str(self.network.network_address + 99)

    def _host_address(self, index: int) -> str:
        return str(self.network.network_address + 11 + index)

    @property
    def ssh_config(self) -> Path:
        """ssh_config for ``ssh -F``: key, known hosts, BatchMode, StrictHostKeyChecking, User root."""
        return self.tmp / "ssh_config"

    @property
    def known_hosts(self) -> Path:
        """known_hosts holding each host's per-run key under its address and its name."""
        return self.tmp / "known_hosts"

    @property
    def identity(self) -> Path:
        """The per-run client private key."""
        return self.tmp / "id_ed25519"

    @property
    def bad_key_ssh_config(self) -> Path:
        """Like :attr:`ssh_config` but offering a key no host accepts ("Permission denied")."""
        return self.tmp / "ssh_config_bad_key"

    @property
    def ssh_wrapper(self) -> Path:
        """An executable ``ssh -F <ssh_config> "$@"``: give it to an MPI as its ssh."""
        return self.tmp / "ssh"

    def host(self, name: str) -> Host:
        """The host called ``name`` (``h1``..``h3``). Raises KeyError if there is none."""
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    # -- build and tear down -------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> Cluster:
        """Build the namespaces, bridge, keys, configs and sshds; wait until each host answers ssh.

        Cleans leftovers of dead runs first. On any failure, what was built is torn down and
        ClusterUnavailable is raised with the reason.
        """
        reason = self.unavailable_reason()
        if reason:
            raise ClusterUnavailable(reason)
        cleanup_leftovers()
        self.tmp = Path(tempfile.mkdtemp(prefix=self.prefix))
        self.hosts = [Host(name, self._host_address(i), self.prefix + name)
                      for i, name in enumerate(self.host_names)]
        self._is_up = True
        atexit.register(self.down)
        try:
            self._write_state()
            self._build_network()
            self._start_services()
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        """Kill every process in this run's namespaces, delete them and the temp dir. Idempotent."""
        if not self._is_up:
            return
        self._is_up = False
        for netns in [h.netns for h in self.hosts] + [self.launcher_ns, self.switch_ns]:
            _remove_netns(netns)
        for proc in self._sshd.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._sshd.clear()
        _remove_empty_netns_etc()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # What a subclass with other hosts or daemons (tests/slurm/slurmhosts.py) replaces:
    host_names = HOST_NAMES

    @staticmethod
    def unavailable_reason() -> str | None:
        """Why this machine cannot build these hosts, or None (:func:`unavailable_reason`)."""
        return unavailable_reason()

    def _start_services(self) -> None:
        """Keys, ssh files and an sshd per host, once the network is up; each host answers ssh."""
        self._make_keys()
        self._write_ssh_files()
        for host in self.hosts:
            self.start_sshd(host.name)
        self._check_ssh()

    def _write_state(self) -> None:
        state = {"owner": self.owner, "subnet": self.subnet, "hosts": [asdict(h) for h in self.hosts]}
        (self.tmp / STATE).write_text(json.dumps(state, indent=1))

    def _build_network(self) -> None:
        sw = self.switch_ns
        for netns in [sw, self.launcher_ns] + [h.netns for h in self.hosts]:
            _run(["ip", "netns", "add", netns])
            _run(["ip", "-n", netns, "link", "set", "lo", "up"])
        _run(["ip", "-n", sw, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", sw, "link", "set", "br0", "up"])
        ports = [("ln", self.launcher_ns, self.launcher_address)]
        ports += [(h.name, h.netns, h.address) for h in self.hosts]
        for short, netns, address in ports:
            port = f"p-{short}"
            _run(["ip", "-n", sw, "link", "add", port, "type", "veth",
                  "peer", "name", "eth0", "netns", netns])
            _run(["ip", "-n", sw, "link", "set", port, "master", "br0", "up"])
            _run(["ip", "-n", netns, "addr", "add", f"{address}/{self.prefixlen}", "dev", "eth0"])
            _run(["ip", "-n", netns, "link", "set", "eth0", "up"])
        ln = self.launcher_ns
        # A veth pair with both ends here (no dummy driver on every kernel): up, but leads nowhere.
        _run(["ip", "-n", ln, "link", "add", self.decoy_iface, "type", "veth", "peer", "name", "side1"])
        _run(["ip", "-n", ln, "addr", "add", DECOY, "dev", self.decoy_iface])
        _run(["ip", "-n", ln, "link", "set", "side1", "up"])
        _run(["ip", "-n", ln, "link", "set", self.decoy_iface, "up"])
        self._write_etc_hosts([n for _, n, _ in ports])

    def _write_etc_hosts(self, namespaces: Sequence[str]) -> None:
        base = Path("/etc/hosts").read_text()
        extra = "".join(f"{h.address}\t{h.name}\n" for h in self.hosts)
        for netns in namespaces:
            (NETNS_ETC / netns).mkdir(parents=True, exist_ok=True)
            (NETNS_ETC / netns / "hosts").write_text(base.rstrip("\n") + "\n" + extra)

    def _make_keys(self) -> None:
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "distrcomp-test-client",
              "-f", str(self.identity)])
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "distrcomp-test-unauthorized",
              "-f", str(self.tmp / "id_unauthorized")])
        for host in self.hosts:
            (self.tmp / host.name).mkdir()
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host.name,
                  "-f", str(self._host_key(host))])

    def _host_key(self, host: Host) -> Path:
        return self.tmp / host.name / "ssh_host_ed25519_key"

    def _write_ssh_files(self) -> None:
        (self.tmp / "authorized_keys").write_text(self.identity.with_suffix(".pub").read_text())
        lines = []
        for host in self.hosts:
            key_type, key = self._host_key(host).with_suffix(".pub").read_text().split()[:2]
            lines.append(f"{host.address},{host.name} {key_type} {key}\n")
            (self.tmp / host.name / "sshd_config").write_text(self._sshd_config(host))
        self.known_hosts.write_text("".join(lines))
        self.ssh_config.write_text(self._client_config(self.identity))
        self.bad_key_ssh_config.write_text(self._client_config(self.tmp / "id_unauthorized"))
        self.ssh_wrapper.write_text(f'#!/bin/sh\nexec ssh -F "{self.ssh_config}" "$@"\n')
        self.ssh_wrapper.chmod(0o755)

    def _sshd_config(self, host: Host) -> str:
        d = self.tmp / host.name
        return f"""\
# Per-run test sshd for {host.name} ({host.netns}); removed with the cluster.
ListenAddress {host.address}:22
AddressFamily inet
HostKey {self._host_key(host)}
PidFile {d / 'sshd.pid'}
AuthorizedKeysFile {self.tmp / 'authorized_keys'}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# The temp dir lives under /tmp (mode 1777), which StrictModes would reject.
StrictModes no
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
MaxStartups 100:30:200
MaxSessions 100
AcceptEnv LANG LC_*
Subsystem sftp internal-sftp
LogLevel VERBOSE
"""

    def _client_config(self, identity: Path) -> str:
        aliases = "".join(f"Host {h.name}\n    HostName {h.address}\n" for h in self.hosts)
        return f"""\
# Per-run ssh client config for the distrcomp test hosts: use with ssh -F <this file>
{aliases}Host *
    User root
    IdentityFile {identity}
    IdentitiesOnly yes
    UserKnownHostsFile {self.known_hosts}
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    CheckHostIP no
    UpdateHostKeys no
    BatchMode yes
    ConnectTimeout 5
    # A host that stops answering mid-session (see set_link) ends the session in ~15 s instead
    # of never: MPI launchers wait on their ssh children.
    ServerAliveInterval 5
    ServerAliveCountMax 3
    ControlMaster no
    LogLevel ERROR
"""

    # -- sshd ------------------------------------------------------------------------------------

    def start_sshd(self, name: str, timeout: float = 10.0) -> None:
        """Start host ``name``'s sshd (hostname set in a fresh UTS namespace); wait until it listens."""
        host = self.host(name)
        conf = self.tmp / name / "sshd_config"
        log_path = self.tmp / name / "sshd.log"
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        offset = log_path.stat().st_size if log_path.exists() else 0
        script = f'hostname {name} && exec {SSHD} -D -e -f "{conf}"'
        with open(log_path, "ab") as log:
            self._sshd[name] = subprocess.Popen(
                ["ip", "netns", "exec", host.netns, "unshare", "--uts", "sh", "-c", script],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )
        self._wait_listening(name, log_path, offset, timeout)

    def _wait_listening(self, name: str, log_path: Path, offset: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(log_path, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
            if "Server listening on" in text:
                return
            if self._sshd[name].poll() is not None:
                raise ClusterUnavailable(f"sshd on {name} exited: {text.strip()}")
            time.sleep(0.02)
        raise ClusterUnavailable(f"sshd on {name} not listening after {timeout}s: {log_path}")

    def stop_sshd(self, name: str) -> None:
        """Stop host ``name``'s sshd daemon (open sessions and what they run are left alone)."""
        proc = self._sshd.pop(name, None)
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
            return
        pid_file = self.tmp / name / "sshd.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGTERM)

    def crash_host(self, name: str) -> None:
        """SIGKILL everything on host ``name`` (sshd, sessions, ranks), as if it lost power.

        Its network stays up, so connections to it are refused or reset, not left hanging.
        ``start_sshd(name)`` brings it back.
        """
        _kill_netns_processes(self.host(name).netns, signals=[signal.SIGKILL])
        proc = self._sshd.pop(name, None)
        if proc is not None:
            proc.wait(timeout=10)

    def set_link(self, name: str, up: bool) -> None:
        """Plug (``up=True``) or unplug host ``name``'s cable: its bridge port goes up or down.

        Unplugged, the host's processes keep running but nothing reaches them: connections to
        it hang until a timeout, like a pulled cable or a dead switch port.
        """
        state = "up" if up else "down"
        _run(["ip", "-n", self.switch_ns, "link", "set", f"p-{name}", state])
        if up:  # forget neighbours marked failed while unplugged, so the host answers at once
            for netns in [self.launcher_ns] + [h.netns for h in self.hosts]:
                _run(["ip", "-n", netns, "neigh", "flush", "dev", "eth0"], check=False)

    def _check_ssh(self) -> None:
        """Every host answers ``ssh HOST hostname`` from the launcher with its own name."""
        procs = {
            h.name: subprocess.Popen(
                self.in_launcher(self.ssh_argv(h.address, "hostname")),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            for h in self.hosts
        }
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=30)
            if proc.returncode != 0 or out.strip() != name:
                raise ClusterUnavailable(
                    f"ssh {name} hostname: exit {proc.returncode}, out {out.strip()!r}, {err.strip()}"
                )

    # -- using the hosts -------------------------------------------------------------------------

    def in_launcher(self, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed so that it runs in the launcher namespace (environment kept)."""
        return ["ip", "netns", "exec", self.launcher_ns, *argv]

    def ssh_argv(self, destination: str, *command: str) -> list[str]:
        """``ssh -F <ssh_config> destination command...`` (run it in the launcher namespace)."""
        return ["ssh", "-F", str(self.ssh_config), destination, *command]

    def run(self, argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
        """``subprocess.run`` of ``argv`` in the launcher namespace; output captured as text.

        The environment (``env=``, default ``os.environ``) gets :data:`SEPARATE_MACHINES` added
        unless it sets those variables itself.
        """
        kwargs["env"] = {**SEPARATE_MACHINES, **kwargs.get("env", os.environ)}
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("check", False)
        return subprocess.run(self.in_launcher(argv), **kwargs)  # noqa: PLW1510 (check is set)

    def ssh(self, destination: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run shell ``command`` on ``destination`` (name or address) over ssh from the launcher."""
        return self.run(self.ssh_argv(destination, command), timeout=timeout)

    def processes(self, name: str) -> list[Proc]:
        """Processes running in host ``name``'s namespace, sshd's own included."""
        return netns_processes(self.host(name).netns)

    def stray_processes(self, name: str) -> list[Proc]:
        """Processes on host ``name`` other than sshd and its connection handlers.

        After a job, anything here is a survivor (a shell, proxy, daemon or rank left behind).
        """
        return [p for p in self.processes(name) if not p.is_sshd]

    def kill_strays(self) -> None:
        """SIGKILL every stray process (see :meth:`stray_processes`) on every host."""
        for host in self.hosts:
            for proc in self.stray_processes(host.name):
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def wait_no_strays(self, timeout: float = 10.0) -> dict[str, list[Proc]]:
        """Wait up to ``timeout`` s for every host to have no stray process; return what remains."""
        deadline = time.monotonic() + timeout
        while True:
            left = {h.name: self.stray_processes(h.name) for h in self.hosts}
            left = {name: procs for name, procs in left.items() if procs}
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.1)

    def port_bytes(self) -> dict[str, int]:
        """Bytes (received + sent) through each host's bridge port so far, by name (``ln`` too).

        The difference across a job shows how much of it crossed the test network.
        """
        done = _run(["ip", "-n", self.switch_ns, "-j", "-s", "link", "show"])
        counts = {}
        for link in json.loads(done.stdout):
            if link["ifname"].startswith("p-"):
                stats = link["stats64"]
                counts[link["ifname"][2:]] = stats["rx"]["bytes"] + stats["tx"]["bytes"]
        return counts

    def env(self) -> dict[str, str]:
        """Environment that points each MPI's ssh launcher at :attr:`ssh_wrapper`.

        MPICH hydra reads ``HYDRA_LAUNCHER_EXEC``; Open MPI 5 (PRRTE) reads
        ``PRTE_MCA_plm_ssh_agent``. Open MPI 5 ignores ``OMPI_MCA_plm_rsh_agent`` in the
        environment (only ``--mca plm_rsh_agent`` on the command line is translated).
        """
        wrapper = str(self.ssh_wrapper)
        return {
            "HYDRA_LAUNCHER": "ssh",
            "HYDRA_LAUNCHER_EXEC": wrapper,
            "PRTE_MCA_plm_ssh_agent": wrapper,
        }

    def describe(self) -> str:
        """A human summary: hosts, launcher, files, and how to use them."""
        lines = [(f"launcher: ip netns exec {self.launcher_ns} ...  "
                 f"({self.launcher_iface} {self.launcher_address}/{self.prefixlen}, "
                 f"decoy {self.decoy_iface} {DECOY})")]
        lines += [f"{h.name}: {h.address}  (netns {h.netns})" for h in self.hosts]
        lines += [f"unused address: {self.unused_address}",
                  f"ssh_config: {self.ssh_config}",
                  f"ssh wrapper: {self.ssh_wrapper}",
                  f"try: ip netns exec {self.launcher_ns} ssh -F {self.ssh_config} h1 hostname"]
        lines += [f"export {k}={v}" for k, v in self.env().items()]
        return "\n".join(lines)


def _status() -> str:
    lines = []
    for netns in list_namespaces():
        owner = _owner_pid(netns)
        state = "live" if owner is not None and _alive(owner) else "leftover"
        procs = netns_processes(netns)
        lines.append(f"{netns}  owner {owner} ({state}), {len(procs)} processes")
    lines += [f"temp dir {path}" for path in _leftover_dirs()]
    return "\n".join(lines) or "no test hosts"


def main(argv: Sequence[str] | None = None) -> int:
    """``up`` | ``down [--all]`` | ``status``: the test hosts by hand."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--all", action="store_true",
                        help="down: also remove clusters whose owner process is still alive")
    args = parser.parse_args(argv)
    if args.action == "status":
        print(_status())
        return 0
    if args.action == "down":
        for name in cleanup_leftovers(include_live=args.all):
            print(f"removed {name}")
        return 0
    cluster = Cluster()
    try:
        cluster.up()
    except ClusterUnavailable as exc:
        print(f"cannot build test hosts: {exc}", file=sys.stderr)
        return 1
    atexit.unregister(cluster.down)  # by hand: it stays up until `down`
    print(cluster.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What ``distrcomp run`` does around a job when nodes run on other machines, or ship files:
its options, the launcher address, the ssh wrapper for the MPI, the pre-flight, the staging.

Order of events (:class:`Remote`): :meth:`Remote.plan` checks what can be checked without
touching the network (files exist, the address is this machine's) and :meth:`Remote.apply`
writes the result into the job's spec; then, inside :meth:`Remote.prepared`, the pre-flight
(every remote host answers ssh, in parallel), the job's key (how a node proves it belongs to
the job: written on each remote host over ssh, never given to the MPI, see :mod:`.jobkey`;
inside a Slurm allocation, a MUNGE credential instead, see :mod:`.munge`), the
shipping, the job, and always the removal of the key and the shipped files. Any failure before
the job raises :class:`RemoteError` (exit 2, nothing
launched).
"""

from __future__ import annotations

import _signal  # signal's C part: signal.py imports enum (see .job)
import os
import sys

from .channel import ENV_MUNGE, ENV_SECRET_FILE, ENV_SLOTS, ENV_WORKDIR
from .flavor import Flavor

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from .address import LauncherAddress
    from .jobkey import JobKey
    from .scratch import Scratch
    from .slurm import Allocation, SbcastStage
    from .staging import Stage
del TYPE_CHECKING
# address, ssh and staging are imported where needed: a job on this machine alone, the most
# common, needs none of them (ssh imports subprocess), and the launcher's start-up delays every
# node.

__all__ = ["Interrupted", "Remote", "RemoteError", "add_options"]

LOOPBACK = "127.0.0.1"


class RemoteError(Exception):
    """Something to fix before the job can start (the message names the host, file or address)."""


def add_options(run: argparse.ArgumentParser) -> None:
    """The multi-host and file-shipping options of ``distrcomp run``."""
    from . import ssh

    group = run.add_argument_group(
        "multiple machines",
        "Remote hosts (peers that are not this machine) are reached with the ordinary ssh\n"
        "client, as `ssh HOST` would: keys, agent and ~/.ssh/config apply. Always set:\n"
        f"{' '.join(ssh.OPTIONS[1::2])}.\n"
        "Across machines the nodes get PATH, PYTHONUNBUFFERED (see -u) and the -x variables "
        "only.",
    )
    group.add_argument("--ssh-config", metavar="FILE",
                       help="ssh client configuration to use instead of ~/.ssh/config (ssh -F)")
    group.add_argument("--launcher-address", metavar="ADDR",
                       help="this machine's address the nodes connect back to (default: the "
                            "source address of the route to the first remote host)")
    group.add_argument("--no-check", action="store_true",
                       help="skip the pre-flight (every remote host must answer ssh within "
                            f"{ssh.CONNECT_TIMEOUT} s, else exit 2 naming each bad host); the "
                            "job's key still goes to each remote host over ssh first, which "
                            "fails the same way")
    group.add_argument("--files", metavar="A,B,DIR/", default="",
                       help="ship these files (directories recursively) to every host into a "
                            "fresh per-job directory under /tmp, run the nodes there, remove it "
                            "afterwards")
    group.add_argument("--keep-files", action="store_true",
                       help="with --files: keep the shipped directory and print where it is")


def _is_local(host: str) -> bool:
    """Whether ``host`` is this machine (see :func:`.address.is_local`); ``localhost``, the
    host of every node when there is no peers file, without importing :mod:`.address`."""
    if host == "localhost":
        return True
    from .address import is_local

    return is_local(host)


def _host_slots(names: Sequence[str]) -> tuple[list[str], list[int]]:
    """Node hosts (one per node, consecutive per host) → hosts in order and nodes on each."""
    hosts: list[str] = []
    slots: list[int] = []
    for name in names:
        if hosts and hosts[-1] == name:
            slots[-1] += 1
        else:
            hosts.append(name)
            slots.append(1)
    return hosts, slots


class Remote:
    """The multi-host side of one ``distrcomp run``; build it with :meth:`plan`."""

    def __init__(self, flavor: Flavor, hosts: list[str], slots: list[int], local: list[bool],
                 ssh_config: str | None, check: bool, keep_files: bool) -> None:
        self.flavor = flavor
        self.hosts = hosts
        self.slots = slots
        self.local = local
        self.ssh_config = ssh_config
        self.check = check
        self.keep_files = keep_files
        self.launcher: LauncherAddress | None = None
        self.address_reason = ""
        self.files: list = []
        self.stage: Stage | SbcastStage | None = None
        self.key: JobKey | None = None
        self._specs: list = []  # those apply() set up
        self.scratch: str | None = None  # the ssh wrapper's directory (see .scratch)
        self._scratch: Scratch | None = None
        # Inside a Slurm allocation the MPI reaches the nodes through Slurm, files go by sbcast
        self.allocation: Allocation | None = None

    @property
    def remote_hosts(self) -> list[str]:
        """The hosts that are not this machine, in peers order."""
        return [host for host, local in zip(self.hosts, self.local) if not local]

    @classmethod
    def plan(cls, args: argparse.Namespace, names: Sequence[str], flavor: Flavor,
             extra_files: Sequence[str] = (), allocation: Allocation | None = None) -> Remote:
        """From the parsed options and the host of each node: which hosts are remote, the
        launcher address, the files to ship (``--files``, then ``extra_files``, e.g. the
        ``files`` of a legacy master.py). With ``allocation`` (the nodes are a Slurm
        allocation's) no ssh is used: no wrapper, no pre-flight, files go by ``sbcast``.
        Raises RemoteError for a missing ssh config or file, an address that is not this
        machine's, or a remote host without a route."""
        hosts, slots = _host_slots(names)
        config = args.ssh_config
        if config is not None:
            if not os.path.isfile(config):
                raise RemoteError(f"--ssh-config {config}: no such file")
            config = os.path.abspath(config)
        remote = cls(flavor, hosts, slots, [_is_local(h) for h in hosts], config,
                     check=not args.no_check, keep_files=args.keep_files)
        remote.allocation = allocation
        if args.files or extra_files:
            from .staging import StagingError, check_files, parse_files

            try:
                remote.files = check_files([*parse_files(args.files), *extra_files])
            except StagingError as exc:
                raise RemoteError(str(exc)) from None
        if args.keep_files and not remote.files:
            raise RemoteError("--keep-files needs --files")
        if args.launcher_address is not None or remote.remote_hosts:
            from .address import AddressError

            try:
                remote._choose_address(args.launcher_address)
            except AddressError as exc:
                raise RemoteError(str(exc)) from None
        return remote

    def _choose_address(self, given: str | None) -> None:
        from . import address as addr

        others = self.remote_hosts
        if given is not None:
            self.launcher = addr.validate(given)
            self.address_reason = "given with --launcher-address"
        elif others:
            # The first host with a route decides; a host that does not resolve is left to the
            # pre-flight, which names every bad host at once.
            errors = []
            for host in others:
                try:
                    source = addr.route_source(host)
                except addr.AddressError as exc:
                    errors.append(exc)
                    continue
                self.launcher = addr.validate(source)
                self.address_reason = f"the source of the route to {host}"
                return
            raise errors[0]
        if self.launcher is not None and others:
            try:
                first = addr.route_source(others[0])
            except addr.AddressError:
                first = None
            if first is not None and first != self.launcher.address:
                self.address_reason += f"; the route to {others[0]} leaves from {first}"

    def _open_mpi_network(self) -> str | None:
        """The launcher's network, for Open MPI's interface selection, if every remote host is
        inside it (the usual cluster subnet); else None: across routers the hosts' own
        interfaces are in other networks, and Open MPI finds its way by trying each address."""
        if self.launcher is None or self.launcher.network is None:
            return None
        import ipaddress

        from . import address as addr

        network = ipaddress.ip_network(self.launcher.network)
        for host in self.remote_hosts:
            try:
                if ipaddress.ip_address(addr.resolve(host)) not in network:
                    return None
            except (addr.AddressError, ValueError):
                return None
        return str(network)

    def apply(self, spec) -> None:
        """Set ``spec`` (a :class:`.job.JobSpec`) up for these hosts: relay address, ssh wrapper,
        launcher address, forwarded PATH, and the staged working directories. Several specs
        (the commands of a legacy master.py) may share one Remote: one wrapper, one staging."""
        if self.remote_hosts:
            if self.allocation is None and self.scratch is None:
                # watched like the job's own: never left behind, even by a SIGKILLed launcher
                from . import scratch

                self._scratch = scratch.make()
                self.scratch = self._scratch.path
            if self.scratch is not None:
                spec.site_args += self.flavor.ssh_args(os.path.join(self.scratch, "ssh"))
            assert self.launcher is not None
            spec.site_args += self.flavor.address_args(self.launcher.address,
                                                       self._open_mpi_network())
            # Remote nodes get only the forwarded names (MPICH -envlist, Open MPI -x): PATH
            # too, so that a bare `python` is the launcher's, not the remote login shell's.
            spec.env.setdefault("PATH", None)
            # The secret goes over ssh, never in the environment the MPI forwards (.jobkey).
            # Inside a Slurm allocation there is no ssh: nodes prove themselves with MUNGE
            # and the secret stays here (.munge).
            if self.allocation is None:
                self._give_key(spec)
            else:
                self._use_munge(spec)
            spec.unreached_hint = (
                f"distrcomp: the nodes were told to connect back to {self.launcher.address} "
                f"({self.address_reason}); if the hosts cannot reach it, choose another with "
                "--launcher-address")
        if self.launcher is not None:
            spec.bind = self.launcher.address
        elif all(self.local):
            spec.bind = LOOPBACK
        if self.files:
            if self.stage is None and self.allocation is not None:
                from .slurm import SbcastStage

                self.stage = SbcastStage(self.allocation)
            elif self.stage is None:
                from .staging import Stage

                self.stage = Stage(self.hosts, self.local, self.ssh_config)
            spec.site_args += self.flavor.wdir_args(self.stage.root)
            spec.env[ENV_WORKDIR] = self.stage.root
            spec.env[ENV_SLOTS] = ",".join(str(count) for count in self.slots)

    def _give_key(self, spec) -> None:
        """Make ``spec``'s nodes read the job's key from the file the pre-flight writes over
        ssh (one key for every spec of this Remote; removed once the last spec's nodes have
        all connected)."""
        if self.key is None:
            from .jobkey import JobKey

            self.key = JobKey(self.hosts, self.local, self.ssh_config)
        spec.secret = self.key.secret
        spec.env[ENV_SECRET_FILE] = self.key.path
        for earlier in self._specs:
            earlier.on_connected = None
        spec.on_connected = self.key.start_removal
        self._specs.append(spec)

    def _use_munge(self, spec) -> None:
        """Make ``spec``'s nodes prove themselves with a MUNGE credential, checked here with
        ``unmunge`` through the munged socket Slurm uses. Raises RemoteError if this machine
        has no ``unmunge``."""
        import functools
        import shutil

        from . import munge

        if shutil.which("unmunge") is None:
            raise RemoteError("inside a Slurm allocation nodes prove they belong to the job "
                              "with MUNGE, but unmunge is not installed on this machine "
                              "(Debian/Ubuntu: apt install munge)")
        socket_path = munge.slurm_socket()
        spec.env[ENV_MUNGE] = socket_path or ""
        spec.verify = functools.partial(munge.decode, socket_path=socket_path)

    @property
    def ssh_program(self) -> str | None:
        """The path the ssh wrapper for the MPI is written to, if the job has remote hosts."""
        return None if self.scratch is None else os.path.join(self.scratch, "ssh")

    def dry_run_lines(self) -> list[str]:
        """The shell lines a dry run runs before mpiexec: the Slurm steps that ship the files."""
        if self.allocation is None or self.stage is None:
            return []
        import shlex

        return ["# --files: shipped by Slurm before the job (a real run removes them after)",
                *(shlex.join(argv) for argv in self.stage.commands())]  # type: ignore[union-attr]

    def discard(self) -> None:
        """Remove the local scratch directory (after a dry run)."""
        if self._scratch is not None:
            self._scratch.remove()
            self._scratch = self.scratch = None

    def prepared(self) -> Remote:
        """``with site.prepared(): JOB``: pre-flight, the job's key and shipping, then the body
        (the job); the key, the shipped files and the ssh wrapper are removed afterwards
        whatever happens
        (``--keep-files`` keeps the files). Raises RemoteError, nothing launched, if a host
        fails the pre-flight or the shipping. (A class's ``__enter__``/``__exit__`` rather than
        ``contextlib``: its import is ~2 ms of the launcher's start-up, with ``collections``.)"""
        return self

    def __enter__(self) -> None:
        previous = _signal.getsignal(_signal.SIGTERM)
        # Until the job installs its own handlers, SIGTERM must still reach the clean-up.
        _signal.signal(_signal.SIGTERM, _raise_interrupt)
        try:
            if self.scratch is not None:
                from . import ssh

                ssh.write_wrapper(os.path.join(self.scratch, "ssh"), self.ssh_config)
            if self.remote_hosts and self.allocation is None:
                self._preflight()
            if self.stage is not None:
                from .staging import StagingError

                try:
                    self.stage.ship(self.files)
                except StagingError as exc:
                    raise RemoteError(str(exc)) from None
        except BaseException:
            _signal.signal(_signal.SIGTERM, previous)
            self._clean_up()
            raise
        _signal.signal(_signal.SIGTERM, previous)

    def __exit__(self, *_exc: object) -> None:
        self._clean_up()

    def _preflight(self) -> None:
        """One ssh per remote host, in parallel: the check (unless ``--no-check``), then the
        job's key written from ssh's standard input; the key is written here first if nodes
        run here."""
        from . import ssh
        from .jobkey import JobKeyError

        key = self.key
        assert key is not None  # apply() made it: there are remote hosts
        if any(self.local):
            try:
                key.write_here()
            except (JobKeyError, OSError) as exc:
                raise RemoteError(f"cannot write the job's key {key.path}: {exc}") from None
        remote = self.remote_hosts
        problems = ssh.check_hosts(remote, sys.executable if self.check else None,
                                   self.ssh_config, then=key.command, data=key.data)
        failed = {problem.host for problem in problems}
        key.written = {host for host in remote if host not in failed}
        if problems:
            lines = "".join(f"\n  {problem.host}: {problem.reason}" for problem in problems)
            if self.check:
                raise RemoteError(f"pre-flight: {len(problems)} of {len(remote)} remote hosts "
                                  "failed the ssh check (nothing launched; --no-check skips "
                                  f"it):{lines}")
            raise RemoteError(f"could not deliver the job's key over ssh to {len(problems)} of "
                              f"{len(remote)} remote hosts (nothing launched):{lines}")

    def _clean_up(self) -> None:
        if self.key is not None:
            for line in self.key.remove():
                sys.stderr.write(line + "\n")
        if self.stage is not None:
            if self.keep_files and self.stage.created:
                messages = self.stage.describe()
            else:
                messages = self.stage.remove()
            for line in messages:
                sys.stderr.write(line + "\n")
        self.discard()


class Interrupted(KeyboardInterrupt):
    """SIGTERM arrived before the job started (``signum``: exit with 128 + it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise Interrupted(signum)

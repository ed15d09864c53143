"""File shipping (``--files``): a fresh working directory per job on every host, holding exactly
the shipped files, where the nodes run; removed when the job ends.

Layout, the same path on every host::

    /tmp/distrcomp-<random>/      the job's directory (mode 0700): mpiexec's working directory
        0/  1/  ...               one per host, numbered in peers-file order: a node's working
                                  directory is the one of its host

The per-host level keeps hosts apart when they share a file system (NFS, or test hosts on one
machine): each host still gets its own copy, written once per host whatever its slots. The node
wrapper finds its directory from :data:`ENV_WORKDIR` and :data:`ENV_SLOTS` (its node id counted
through the slots of each host).

Transfer: the launcher reads each file once and writes one tar stream, fanned out to one
``ssh HOST 'mkdir ... && tar -x'`` per remote host in parallel; hosts that are this machine get
a local copy. Nothing listens on any port.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from . import pipesize, ssh
from .channel import ENV_SLOTS, ENV_WORKDIR

__all__ = ["ENV_SLOTS", "ENV_WORKDIR", "Stage", "StagingError", "check_files", "node_workdir",
           "parse_files"]

BASE = "/tmp"
_CHUNK = 1 << 20
_REMOVE_TIMEOUT = ssh.CONNECT_TIMEOUT + 10.0


class StagingError(Exception):
    """Files could not be shipped: the message names the file or the host (and ssh's error)."""


class Shipped(NamedTuple):
    """One entry of ``--files``: the local path and its name in the working directory."""

    path: Path
    name: str


def parse_files(spec: str) -> list[str]:
    """``"a.py,data.bin,conf/"`` → ``["a.py", "data.bin", "conf/"]`` (empty items ignored)."""
    return [item.strip() for item in spec.split(",") if item.strip()]


def check_files(paths: Sequence[str]) -> list[Shipped]:
    """The files to ship, each under its base name (a directory with all it contains).

    Raises StagingError naming the path for a missing or unreadable file, or two entries
    with the same base name.
    """
    shipped: list[Shipped] = []
    seen: dict[str, str] = {}
    for text in paths:
        path = Path(text)
        name = path.resolve().name if text.rstrip("/") in ("", ".", "..") else path.name
        if not path.exists():
            raise StagingError(f"--files: {text}: no such file or directory")
        if not os.access(path, os.R_OK):
            raise StagingError(f"--files: {text}: not readable")
        if name in seen:
            raise StagingError(f"--files: {seen[name]} and {text} would both be {name!r} in the "
                               "working directory")
        seen[name] = text
        shipped.append(Shipped(path, name))
    return shipped


def node_workdir(base: str, slots: str, node: int) -> str:
    """The working directory of node ``node``: ``base/K`` where host K holds that node, given
    ``slots`` (nodes per host, comma-separated, in node order). Raises ValueError if the node is
    beyond the slots."""
    first = 0
    for index, count in enumerate(int(item) for item in slots.split(",")):
        first += count
        if node < first:
            return os.path.join(base, str(index))
    raise ValueError(f"node {node} is beyond the {first} slots of {ENV_SLOTS}={slots!r}")


class _FanOut:
    """A write-only file object copying everything to several ssh processes' stdin; a host whose
    ssh has died is dropped (its error comes from its exit status)."""

    def __init__(self, procs: dict[int, subprocess.Popen]) -> None:
        self.procs = dict(procs)

    def write(self, data: bytes) -> int:
        for index, proc in list(self.procs.items()):
            try:
                proc.stdin.write(data)  # type: ignore[union-attr]
            except (BrokenPipeError, OSError):
                del self.procs[index]
        return len(data)

    def close(self) -> None:
        for proc in self.procs.values():
            try:
                proc.stdin.close()  # type: ignore[union-attr]
            except OSError:
                pass


class Stage:
    """The job's working directories on ``hosts`` (peers-file order, each once).

    ``local[i]`` says host ``i`` is this machine. :meth:`ship` creates and fills them;
    :meth:`remove` deletes them (idempotent, best effort, reporting what it could not remove).
    """

    def __init__(self, hosts: Sequence[str], local: Sequence[bool], ssh_config: str | None = None,
                 base: str = BASE) -> None:
        self.hosts = list(hosts)
        self.local = list(local)
        self.ssh_config = ssh_config
        self.root = os.path.join(base, f"distrcomp-{os.urandom(8).hex()}")
        self.created: set[int] = set()

    def directory(self, index: int) -> str:
        """Working directory of the nodes of host ``index``."""
        return os.path.join(self.root, str(index))

    def ship(self, files: Sequence[Shipped]) -> None:
        """Create every host's directory and copy ``files`` into it; the remote hosts in
        parallel, reading each file once. Raises StagingError naming each host that failed
        (with ssh's or tar's last error line); the directories made so far are then left for
        :meth:`remove`."""
        remote = [i for i, local in enumerate(self.local) if not local]
        for index, local in enumerate(self.local):
            if local:
                self._ship_local(index, files)
        if remote:
            self._ship_remote(remote, files)

    def _ship_local(self, index: int, files: Sequence[Shipped]) -> None:
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        target = self.directory(index)
        os.mkdir(target, 0o700)
        self.created.add(index)
        for item in files:
            destination = os.path.join(target, item.name)
            try:
                if item.path.is_dir():
                    shutil.copytree(item.path, destination, symlinks=True)
                else:
                    shutil.copy2(item.path, destination)
            except OSError as exc:
                raise StagingError(f"--files: cannot copy {item.path} to {destination}: "
                                   f"{exc.strerror or exc}") from None

    def _ship_remote(self, remote: Sequence[int], files: Sequence[Shipped]) -> None:
        procs: dict[int, subprocess.Popen] = {}
        # umask: the job's directory and everything in it are the user's alone
        for index in remote:
            target = shlex.quote(self.directory(index))
            command = (f"umask 077 && mkdir -p {shlex.quote(self.root)} && mkdir {target} && "
                       f"tar -x -f - --no-same-owner -C {target}")
            procs[index] = subprocess.Popen(
                ssh.ssh_argv(self.hosts[index], command, self.ssh_config),
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                start_new_session=True,
            )
            self.created.add(index)
            pipesize.widen(procs[index].stdin.fileno(), _CHUNK)  # type: ignore[union-attr]
        errors: dict[int, bytes] = {}
        try:
            fan = _FanOut(procs)
            with tarfile.open(fileobj=fan, mode="w|", bufsize=_CHUNK,  # type: ignore[arg-type]
                              format=tarfile.PAX_FORMAT) as archive:
                for item in files:
                    archive.add(str(item.path), arcname=item.name, recursive=True)
            fan.close()
            for index, proc in procs.items():
                assert proc.stderr is not None
                errors[index] = proc.stderr.read()
                proc.wait()
        except OSError as exc:
            raise StagingError(f"--files: cannot read {exc.filename}: {exc.strerror}") from None
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        failed = [i for i, proc in procs.items() if proc.returncode != 0]
        if failed:
            lines = [f"  {self.hosts[i]}: "
                     f"{ssh.last_error_line(errors.get(i, b'').decode('utf-8', 'replace'))}"
                     for i in failed]
            raise StagingError("--files: could not ship the files to "
                               f"{len(failed)} host(s):\n" + "\n".join(lines))

    def remove(self) -> list[str]:
        """Delete every host's directory (and the job's directory), remote hosts in parallel.
        Returns one message per host where that failed; never raises."""
        problems: list[str] = []
        remote = {}
        for index in sorted(self.created):
            if self.local[index]:
                shutil.rmtree(self.directory(index), ignore_errors=True)
            else:
                command = f"rm -rf -- {shlex.quote(self.root)}"
                remote[str(index)] = ssh.ssh_argv(self.hosts[index], command, self.ssh_config)
        if any(self.local[i] for i in self.created):
            try:
                os.rmdir(self.root)
            except OSError:
                pass  # a remote host sharing this file system removes it, or already did
        for key, (code, err) in ssh.run_parallel(remote, _REMOVE_TIMEOUT).items():
            if code != 0:
                problems.append(f"distrcomp: could not remove {self.root} on "
                                f"{self.hosts[int(key)]}: {ssh.last_error_line(err)}")
        self.created.clear()
        return problems

    def describe(self) -> list[str]:
        """Where the files are, one line per host (for ``--keep-files``)."""
        return [f"distrcomp: files kept in {self.directory(i)} on {self.hosts[i]}"
                for i in range(len(self.hosts))]

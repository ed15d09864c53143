"""The job's key on the hosts of a multi-host job: delivered over ssh, never through the MPI.

Every node proves to the launcher's relay that it belongs to the job with a per-job secret (the
handshake of :mod:`.channel`). That secret must cross the network only inside ssh. The MPI
forwards the environment to other hosts over its own plain TCP connections (MPICH's hydra to
its proxies, Open MPI's daemons to each other), so in a job with remote hosts the secret is not
in mpiexec's environment at all. Before mpiexec starts, the launcher writes it, on the standard
input of one ssh per remote host, into a private file there (and on this machine when nodes run
here too), and the nodes get only the file's path (:data:`.channel.ENV_SECRET_FILE`), the same
on every host::

    /tmp/distrcomp-key-<random>/   mode 0700, made by this user (a host sharing the file
        key                        system may have made it first: it is then this user's own)

The node wrapper reads the file (:func:`.channel.take_secret`). :meth:`JobKey.remove` deletes it
on every host when the job is over.
"""

from __future__ import annotations

import os
import shlex
import signal
import stat
import subprocess
from collections.abc import Sequence

from . import ssh
from .channel import new_secret

__all__ = ["BASE", "JobKey", "JobKeyError"]

BASE = "/tmp"
_TIMEOUT = ssh.CONNECT_TIMEOUT + 10.0


class JobKeyError(Exception):
    """The key could not be written on some host: the message names each one (ssh's error)."""


class JobKey:
    """The secret of one launch and where it lies on ``hosts`` (``local[i]``: host ``i`` is this
    machine). Nothing is written before :meth:`deliver`."""

    def __init__(self, hosts: Sequence[str], local: Sequence[bool], ssh_config: str | None = None,
                 base: str = BASE) -> None:
        self.hosts = list(hosts)
        self.local = list(local)
        self.ssh_config = ssh_config
        self.secret = new_secret()
        self.directory = os.path.join(base, f"distrcomp-key-{os.urandom(8).hex()}")
        self.path = os.path.join(self.directory, "key")
        self.written: list[int] = []  # hosts where the file may exist (ssh did not fail first)

    def deliver(self) -> None:
        """Write the key on this machine if a node runs here, then on every remote host in
        parallel, each over its own ssh (the secret on ssh's standard input, never on a command
        line). Blocks until done or :data:`_TIMEOUT` s. Raises JobKeyError naming each host
        that failed; what was written is left for :meth:`remove`."""
        if any(self.local):
            self.written.append(self.local.index(True))
            self._write_here()
        remote = [index for index, local in enumerate(self.local) if not local]
        folder = shlex.quote(self.directory)
        # mkdir fails if the directory exists: it must then be this user's own real directory
        # (another host on the same file system made it), not something planted there.
        command = (f"umask 077 && {{ mkdir {folder} 2>/dev/null || {{ test -d {folder} && "
                   f"test ! -h {folder} && test -O {folder}; }} || {{ echo 'distrcomp: "
                   f"{self.directory} exists and is not this user'\"'\"'s directory' >&2; "
                   f"exit 3; }}; }} && cat > {folder}/key.$$ && mv -f {folder}/key.$$ "
                   f"{shlex.quote(self.path)}")
        procs = {}
        for index in remote:
            procs[index] = subprocess.Popen(
                ssh.ssh_argv(self.hosts[index], command, self.ssh_config),
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                start_new_session=True,
            )
        failed = []
        try:
            for index, proc in procs.items():
                try:
                    _, err = proc.communicate(self.secret.encode() + b"\n", timeout=_TIMEOUT)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    _, err = proc.communicate()
                    failed.append((index, f"no answer within {_TIMEOUT:g} s"))
                    self.written.append(index)  # it may have got as far as writing
                    continue
                if proc.returncode == 0:
                    self.written.append(index)
                else:
                    failed.append((index, ssh.last_error_line(err.decode("utf-8", "replace"))))
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        if failed:
            lines = "\n".join(f"  {self.hosts[index]}: {reason}" for index, reason in failed)
            raise JobKeyError(f"could not deliver the job's key over ssh to {len(failed)} "
                              f"host(s) (nothing launched):\n{lines}")

    def _write_here(self) -> None:
        try:
            os.mkdir(self.directory, 0o700)
        except FileExistsError:
            info = os.lstat(self.directory)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                raise JobKeyError(f"{self.directory} exists and is not this user's directory") \
                    from None
        temporary = f"{self.path}.{os.getpid()}"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(self.secret + "\n")
        os.replace(temporary, self.path)

    def remove(self) -> list[str]:
        """Delete the key (and its directory) wherever :meth:`deliver` may have written it,
        remote hosts in parallel. Returns one message per host where that failed; never
        raises."""
        commands = {}
        for index in self.written:
            if self.local[index]:
                try:
                    os.unlink(self.path)
                    os.rmdir(self.directory)
                except OSError:
                    pass  # never written, or removed by a host sharing this file system
            else:
                commands[str(index)] = ssh.ssh_argv(
                    self.hosts[index], f"rm -rf -- {shlex.quote(self.directory)}", self.ssh_config)
        problems = []
        for key, (code, err) in ssh.run_parallel(commands, _TIMEOUT).items():
            if code != 0:
                problems.append(f"distrcomp: could not remove the job's key {self.directory} on "
                                f"{self.hosts[int(key)]}: {ssh.last_error_line(err)}")
        self.written.clear()
        return problems

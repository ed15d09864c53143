"""The job's key on the hosts of a multi-host job: delivered over ssh, never through the MPI.

Every node proves to the launcher's relay that it belongs to the job with a per-job secret (the
handshake of :mod:`.channel`). That secret must cross the network only inside ssh. The MPI
forwards the environment to other hosts over its own plain TCP connections (MPICH's hydra to
its proxies, Open MPI's daemons to each other), so in a job with remote hosts the secret is not
in mpiexec's environment at all. Before mpiexec starts, the launcher writes it into a private
file on each remote host, on the standard input of the ssh connection of the pre-flight
(:meth:`.remote.Remote.__enter__`; one connection per host either way), and on this machine when
nodes run here too. The nodes get only the file's path (:data:`.channel.ENV_SECRET_FILE`), the
same on every host::

    /tmp/distrcomp-key-<random>/   mode 0700, made by this user (a host sharing the file
        key                        system may have made it first: it is then this user's own)

The node wrapper reads it (:func:`.channel.take_secret`). Once every node has connected the
key has done its work: :meth:`JobKey.start_removal` starts removing it everywhere (remote hosts
in parallel, while the job runs), and :meth:`JobKey.remove` finishes that, or does it all when
the job ended before.
"""

from __future__ import annotations

import os
import shlex
import stat
from collections.abc import Sequence

from . import ssh
from .channel import new_secret

__all__ = ["BASE", "JobKey", "JobKeyError"]

BASE = "/tmp"
_TIMEOUT = ssh.CONNECT_TIMEOUT + 10.0


class JobKeyError(Exception):
    """The key cannot be written on this machine (the message names the path)."""


class JobKey:
    """The secret of one launch and where it lies on ``hosts`` (``local[i]``: host ``i`` is this
    machine). Nothing is written before :meth:`write_here` and the :attr:`command` on each
    remote host."""

    def __init__(self, hosts: Sequence[str], local: Sequence[bool], ssh_config: str | None = None,
                 base: str = BASE) -> None:
        self.hosts = list(hosts)
        self.local = list(local)
        self.ssh_config = ssh_config
        self.secret = new_secret()
        self.directory = os.path.join(base, f"distrcomp-key-{os.urandom(8).hex()}")
        self.path = os.path.join(self.directory, "key")
        self.written: set[str] = set()  # remote hosts where the file may exist
        self._here = False
        self._removal: dict | None = None

    @property
    def data(self) -> str:
        """What :attr:`command` reads on its standard input: the secret and a newline."""
        return self.secret + "\n"

    @property
    def command(self) -> str:
        """The shell command that writes the key file from its standard input (``umask 077``;
        a directory already there must be this user's own real directory, made by a host on the
        same file system, not something planted there)."""
        folder = shlex.quote(self.directory)
        refusal = shlex.quote(f"distrcomp: {self.directory} exists and is not this user's")
        return (f"umask 077 && {{ mkdir {folder} 2>/dev/null || {{ test -d {folder} && "
                f"test ! -h {folder} && test -O {folder}; }} || {{ echo {refusal} >&2; exit 3; "
                f"}}; }} && cat > {folder}/key.$$ && mv -f {folder}/key.$$ "
                f"{shlex.quote(self.path)}")

    def write_here(self) -> None:
        """Write the key on this machine (mode 0600 in a 0700 directory). Raises JobKeyError
        if the directory exists and is not this user's, OSError if it cannot be written."""
        self._here = True
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
            handle.write(self.data)
        os.replace(temporary, self.path)

    def start_removal(self) -> None:
        """Remove the key here, and start removing it on every remote host it was written to
        (one ssh each, in parallel; :meth:`remove` waits for them). Idempotent; never blocks
        on the network."""
        if self._removal is not None:
            return
        if self._here:
            try:
                os.unlink(self.path)
                os.rmdir(self.directory)
            except OSError:
                pass  # removed by a host sharing this file system, or never complete
        command = f"rm -rf -- {shlex.quote(self.directory)}"
        self._removal = ssh.start_parallel(
            {host: ssh.ssh_argv(host, command, self.ssh_config) for host in sorted(self.written)})

    def remove(self) -> list[str]:
        """Finish the removal :meth:`start_removal` began (or do all of it). Returns one
        message per host where it failed; never raises."""
        self.start_removal()
        assert self._removal is not None
        problems = []
        for host, (code, err) in ssh.finish_parallel(self._removal, _TIMEOUT).items():
            if code != 0:
                problems.append(f"distrcomp: could not remove the job's key {self.directory} on "
                                f"{host}: {ssh.last_error_line(err)}")
        self._removal = {}
        self.written.clear()
        return problems

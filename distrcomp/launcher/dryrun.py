"""``distrcomp run --dry-run``: the job as a shell script that runs as printed.

The script makes a new temporary directory (``mktemp -d``, removed when it exits), writes the hostfile and the ssh
program mpiexec starts its remote side with into it (both inline, as here-documents), exports
the variables given with ``-x NAME=VALUE``, and runs mpiexec on the same hosts, slots, MPI
options and command as ``distrcomp run`` would. What ``distrcomp run`` adds around the nodes is
left out, since it needs the launcher running: the node wrapper and its relay (so output is
untagged and there is no summary), the job's key, the ssh pre-flight, the shipping of
``--files``.
"""

from __future__ import annotations

import shlex

from . import channel, ssh

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the launcher's start-up)
if TYPE_CHECKING:
    from collections.abc import Sequence
del TYPE_CHECKING
from .command import mpiexec_argv

__all__ = ["script"]

_DIRECTORY = '"$dir"'
# what only the node wrapper reads
_WRAPPER_ONLY = {channel.ENV_ADDRESS, channel.ENV_SECRET, channel.ENV_SECRET_FILE, channel.ENV_MUNGE,
                 channel.ENV_JOB, channel.ENV_WORKDIR, channel.ENV_SLOTS}


def _here_document(path: str, text: str) -> list[str]:
    """Shell lines writing ``text`` (ends with a newline) to ``path`` (already quoted)."""
    end = "EOF"
    while end in text.splitlines():
        end += "_"
    return [f"cat > {path} <<'{end}'", *text.splitlines(), end]


def script(spec, peers: str | None, ssh_program: str | None, ssh_config: str | None,
           before: Sequence[str] = ()) -> str:
    """The shell script for ``spec`` (a :class:`.job.JobSpec` that :meth:`.remote.Remote.apply`
    set up); ``peers`` names the peers file (or the Slurm allocation) in a comment,
    ``ssh_program`` is the path the launcher would have written its ssh wrapper to (replaced by
    one the script writes), ``ssh_config`` the ``--ssh-config`` given; ``before``: lines run
    before mpiexec (the Slurm steps that ship ``--files``). Pure: writes nothing."""
    lines = [(f"# distrcomp run --dry-run: {spec.n} nodes under bare mpiexec "
              f"({spec.flavor.name}), without distrcomp's node wrapper and relay"),
             "set -e"]
    hostfile = None
    placeholders: dict[str, str] = {}
    if spec.hostfile_text is not None or ssh_program is not None:
        lines += ["dir=$(mktemp -d)", "trap 'rm -rf \"$dir\"' EXIT"]
    if spec.hostfile_text is None:
        lines.append("# no hostfile: every node runs on this machine")
    else:
        hostfile = f"{_DIRECTORY}/hostfile"
        placeholders[hostfile] = hostfile
        lines.append(f"# hostfile from {peers} ({spec.flavor.name} syntax):")
        lines += _here_document(hostfile, spec.hostfile_text)
    if ssh_program is not None:
        wrapper = f"{_DIRECTORY}/ssh"
        placeholders[ssh_program] = wrapper
        lines.append("# the ssh program mpiexec starts the remote side with:")
        lines += _here_document(wrapper, ssh.wrapper_text(ssh_config))
        lines.append(f"chmod 700 {wrapper}")
    if before:
        lines += before
    elif channel.ENV_WORKDIR in spec.env:
        lines.append(f"# --files: a dry run ships nothing; {spec.env[channel.ENV_WORKDIR]} "
                     "must exist on every host")
    names = [name for name in spec.env if name not in _WRAPPER_ONLY]
    for name in names:
        value = spec.env[name]
        if value is not None:
            lines.append(f"export {name}={shlex.quote(value)}")
    argv = mpiexec_argv(spec.flavor, spec.n, spec.command, hostfile=hostfile,
                        env_names=names, mpi_args=[*spec.site_args, *spec.mpi_args])
    lines.append(f"# mpiexec command line ({spec.n} nodes):")
    lines.append(" ".join(placeholders.get(word) or shlex.quote(word) for word in argv))
    return "".join(line + "\n" for line in lines)

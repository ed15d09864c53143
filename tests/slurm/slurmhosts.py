"""A real Slurm cluster on this one machine: ``slurmctld`` and three ``slurmd`` "hosts" in
network namespaces, built from the pieces of ``tests/cluster/hosts.py``.

Usable as a library (:class:`SlurmCluster`; ``tests/slurm/conftest.py`` wraps it in a session
fixture) and by hand::

    python tests/slurm/slurmhosts.py up      # build, print how to use it; leaves it running
    python tests/cluster/hosts.py down       # removes it once this process is gone (same names)

Topology (every name is created here, per run; the root namespace gets no interface)::

    dc-<pid>-<n>-sw        bridge br0, no uplink
      |- dc-<pid>-<n>-ln       10.77.0.1   the login node: salloc, sbatch, distrcomp run; it
      |                                    also runs slurmctld (SlurmctldHost = this machine's
      |                                    hostname) and munged (a Unix socket in the temp dir)
      |- dc-<pid>-<n>-dcsl-h1  10.77.0.11  hostname dcsl-h1, slurmd
      |- dc-<pid>-<n>-dcsl-h2  10.77.0.12  hostname dcsl-h2, slurmd
      '- dc-<pid>-<n>-dcsl-h3  10.77.0.13  hostname dcsl-h3, slurmd

Each slurmd runs in its node's network namespace (``nsenter --net``: ``ip netns exec`` remounts
``/sys`` and slurmd 22.05 then fails "Unable to initialize cgroup plugin") and in a UTS and
mount namespace of its own: its hostname, ``/etc/hosts`` naming the nodes, a private ``/dev/shm``,
and a private ``/tmp`` into which the cluster's temp dir and the ``share`` directories are
bind-mounted, so that a job's working directory under ``/tmp`` is the same on every node (as a
shared file system would be) while what a job writes elsewhere in ``/tmp`` stays on its node.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the `cluster` package
from cluster.hosts import Cluster, ClusterUnavailable, Host, Proc

__all__ = ["NODE_NAMES", "SlurmCluster", "slurm_unavailable_reason"]

NODE_NAMES = ("dcsl-h1", "dcsl-h2", "dcsl-h3")
DAEMONS = {"slurmctld": "/usr/sbin/slurmctld", "slurmd": "/usr/sbin/slurmd",
           "munged": "/usr/sbin/munged"}
CLIENTS = ("salloc", "sbatch", "srun", "sinfo", "squeue", "scancel", "sbcast", "scontrol")
DAEMON_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
SETUP_HINT = "bash .ci/slurm-setup.sh installs Debian's slurm-wlm and munge"


def slurm_unavailable_reason() -> str | None:
    """Why this machine cannot host the Slurm test cluster, or None if it looks able to."""
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to create network namespaces"
    missing = [name for name, path in DAEMONS.items() if not os.access(path, os.X_OK)]
    missing += [name for name in CLIENTS if shutil.which(name) is None]
    missing += [name for name in ("ip", "nsenter", "unshare", "runuser")
                if shutil.which(name, path=DAEMON_ENV["PATH"]) is None]
    if missing:
        return f"missing: {', '.join(missing)} ({SETUP_HINT})"
    return None


@dataclass
class SlurmCluster(Cluster):
    """Three Slurm nodes ``dcsl-h1..3`` (2 CPUs each, partition ``debug``) and a login node.

    ``up()`` builds and waits until ``sinfo`` shows every node idle (raises ClusterUnavailable
    saying why if it cannot); ``down()`` (inherited) kills every process in the namespaces
    (daemons, job steps, ranks) and removes them and the temp dir. ``share``: directories under
    ``/tmp`` that the nodes see at the same path (e.g. pytest's temp root).
    """

    share: Sequence[Path] = ()
    _daemons: dict[str, subprocess.Popen] = field(default_factory=dict, repr=False)

    @property
    def conf(self) -> Path:
        """slurm.conf: clients find it through ``SLURM_CONF`` (see :meth:`env`)."""
        return self.tmp / "slurm.conf"

    def env(self) -> dict[str, str]:
        """Environment for Slurm's clients (and so for every job) on the login node."""
        return {"SLURM_CONF": str(self.conf)}

    def log(self, name: str) -> Path:
        """The log file of daemon ``name`` (``slurmctld``, ``munged``, or a node's name)."""
        return self.tmp / "log" / f"{name}.log"

    host_names = NODE_NAMES

    @staticmethod
    def unavailable_reason() -> str | None:
        return slurm_unavailable_reason()

    def _start_services(self) -> None:
        """munged and slurmctld on the login node, slurmd on each node; every node idle."""
        self.tmp.chmod(0o755)  # munged runs as user munge and must reach its socket directory
        (self.tmp / "log").mkdir()
        self._write_conf()
        self._start_munged()
        self._start("slurmctld", ["nsenter", f"--net=/run/netns/{self.launcher_ns}",
                                  "unshare", "--mount", "--propagation", "private", "--",
                                  "sh", "-c", self._init_script(None) + self._ctld_command()])
        for host in self.hosts:
            self._start(host.name, self._slurmd_argv(host))
        self._wait_idle()

    def down(self) -> None:
        super().down()
        for proc in self._daemons.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._daemons.clear()

    # -- build -------------------------------------------------------------------------------

    def _write_conf(self) -> None:
        t = self.tmp
        first, last = self.hosts[0].address, self.hosts[-1].address
        addresses = f"{first.rsplit('.', 1)[0]}.[{first.rsplit('.', 1)[1]}-{last.rsplit('.', 1)[1]}]"
        self.conf.write_text(f"""\
# Per-run test cluster ({self.prefix}*); removed with it.
ClusterName=dcsl
SlurmctldHost={os.uname().nodename}({self.launcher_address})
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={t}/munge/munge.sock
SlurmUser=root
SlurmdUser=root
StateSaveLocation={t}/ctld
SlurmdSpoolDir={t}/%n/spool
SlurmctldPidFile={t}/slurmctld.pid
SlurmdPidFile={t}/%n/slurmd.pid
SlurmctldLogFile={t}/log/slurmctld.log
SlurmdLogFile={t}/log/%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
InactiveLimit=0
MinJobAge=30
KillWait=5
Waittime=0
NodeName=dcsl-h[1-3] NodeAddr={addresses} CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
        (t / "ctld").mkdir()
        for host in self.hosts:
            (t / host.name / "spool").mkdir(parents=True)

    def _start(self, name: str, argv: list[str]) -> None:
        with open(self.log(f"{name}.start"), "ab") as log:
            self._daemons[name] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                env=DAEMON_ENV,
            )

    def _start_munged(self) -> None:
        munge = self.tmp / "munge"
        munge.mkdir(mode=0o755)
        key = munge / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        shutil.chown(munge, "munge", "munge")
        shutil.chown(key, "munge", "munge")
        self._start("munged", [
            "nsenter", f"--net=/run/netns/{self.launcher_ns}", "runuser", "-u", "munge", "--",
            DAEMONS["munged"], "-F", "-S", str(munge / "munge.sock"), f"--key-file={key}",
            f"--pid-file={munge / 'munged.pid'}", f"--log-file={self.log('munged')}",
            f"--seed-file={munge / 'munged.seed'}",
        ])
        self._wait_for(lambda: (munge / "munge.sock").exists(), "munged", "munged")

    def _ctld_command(self) -> str:
        return f'exec {DAEMONS["slurmctld"]} -D -i -f "{self.conf}"'

    def _slurmd_argv(self, host: Host) -> list[str]:
        script = (f"hostname {host.name} && " + self._init_script(host)
                  + f'exec {DAEMONS["slurmd"]} -D -f "{self.conf}" -N {host.name}')
        return ["nsenter", f"--net=/run/netns/{host.netns}", "unshare", "--uts", "--mount",
                "--propagation", "private", "--", "sh", "-c", script]

    def _init_script(self, host: Host | None) -> str:
        """Shell lines run in a fresh mount namespace: ``/etc/hosts`` naming the nodes; for a
        node also a private ``/dev/shm`` and ``/tmp`` (keeping the temp dir and ``share``)."""
        netns = self.launcher_ns if host is None else host.netns
        lines = [f'mount --bind "/etc/netns/{netns}/hosts" /etc/hosts']
        if host is not None:
            private = self.tmp / host.name / "tmp"
            lines += [f'mkdir -p "{private}"', f'chmod 1777 "{private}"']
            for shared in [self.tmp, *self.share]:
                if not Path(shared).is_relative_to("/tmp"):
                    continue  # outside /tmp: the node sees it anyway
                inside = private / Path(shared).relative_to("/tmp")
                lines += [f'mkdir -p "{inside}"', f'mount --bind "{shared}" "{inside}"']
            lines += [f'mount --rbind "{private}" /tmp',
                      f"mount -t tmpfs -o mode=1777,size=256m shm-{host.name} /dev/shm"]
        return " && ".join(lines) + " && "

    def _wait_for(self, ready, what: str, log: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [name for name, proc in self._daemons.items() if proc.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "\n".join(self._tail(name) for name in (dead or [log]))
                raise ClusterUnavailable(
                    f"{what}: {'exited: ' + ', '.join(dead) if dead else f'not after {timeout} s'}"
                    f"\n{logs}")
            time.sleep(0.1)

    def _tail(self, name: str) -> str:
        text = ""
        for path in (self.log(f"{name}.start"), self.log(name)):
            if path.exists():
                text += "".join(path.read_text(errors="replace").splitlines(True)[-8:])
        return f"--- {name}\n{text}"

    def _wait_idle(self) -> None:
        def idle() -> bool:
            done = self.run(["sinfo", "-h", "-N", "-t", "idle", "-o", "%N"], timeout=30)
            return len(set(done.stdout.split())) == len(self.hosts)

        self._wait_for(idle, "nodes idle", "slurmctld")

    # -- using it ----------------------------------------------------------------------------

    def run(self, argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
        """``subprocess.run`` of ``argv`` on the login node with :meth:`env` added."""
        kwargs["env"] = {**kwargs.get("env", os.environ), **self.env()}
        return super().run(argv, **kwargs)

    def stray_processes(self, name: str) -> list[Proc]:
        """Processes on node ``name`` other than its slurmd (job steps, ranks, daemons of MPI)."""
        return [p for p in self.processes(name) if p.comm != "slurmd"
                and p.argv[:1] not in (["nsenter"], ["unshare"])]

    def steps(self) -> list[str]:
        """``squeue --steps`` lines (``JOBID.STEP NAME``) of every job step still known."""
        done = self.run(["squeue", "-h", "-s", "-o", "%i %j"], timeout=30)
        return done.stdout.split("\n") if done.stdout.strip() else []

    def describe(self) -> str:
        lines = [f"login node: ip netns exec {self.launcher_ns} ...  ({self.launcher_address})"]
        lines += [f"{h.name}: {h.address}  (netns {h.netns})" for h in self.hosts]
        lines += [f"export SLURM_CONF={self.conf}",
                  f"try: ip netns exec {self.launcher_ns} env SLURM_CONF={self.conf} srun -N3 hostname"]
        return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``up``: build a cluster by hand and leave it running (``hosts.py down`` removes it)."""
    if list(argv if argv is not None else sys.argv[1:]) != ["up"]:
        print("usage: slurmhosts.py up   (tests/cluster/hosts.py down removes it)", file=sys.stderr)
        return 2
    cluster = SlurmCluster()
    try:
        cluster.up()
    except ClusterUnavailable as exc:
        print(f"cannot build the Slurm cluster: {exc}", file=sys.stderr)
        return 1
    atexit.unregister(cluster.down)
    print(cluster.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())

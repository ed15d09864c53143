"""``distrcomp run`` under Slurm: inside an allocation, and from a login node (``--slurm``).

Inside an allocation (``SLURM_JOB_ID`` set, no peers file) the allocation is the peers file:
:func:`allocation` reads its nodes (``SLURM_JOB_NODELIST``, expanded by ``scontrol show
hostnames``) and tasks per node (``SLURM_TASKS_PER_NODE``, e.g. ``2(x3),1``), in Slurm's task
order (block: node 0's tasks first). The job then starts exactly as with a peers file: a
hostfile naming the Slurm nodes, and the MPI's own ``mpiexec``, which starts its remote side
through Slurm by itself (MPICH's hydra: ``srun`` bootstrap; Open MPI's PRRTE: its Slurm
launcher), so no ssh is needed and nothing runs outside the allocation's job steps.

``--files`` under Slurm (:class:`SbcastStage`): one tar of the files, sent to every node of the
allocation once by ``sbcast``, unpacked by one ``srun`` step into the per-job directory, which
another ``srun`` step removes afterwards.

From a login node, ``--slurm "OPTS"`` (:func:`run_outside`): ``salloc OPTS`` runs ``distrcomp
run`` (the same command line without ``--slurm``) inside a new allocation, which ends with it.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from .peers import Host
    from .staging import Shipped
del TYPE_CHECKING

__all__ = ["Allocation", "SbcastStage", "SlurmError", "allocation", "outside_argv",
           "parse_tasks_per_node", "run_outside", "without_slurm_option"]

_STEP_TIMEOUT = 120.0  # seconds for one staging step (sbcast, srun unpack or removal)


class SlurmError(Exception):
    """The allocation cannot give what was asked, or a Slurm command failed (the message names
    the job, the nodes and Slurm's own error line)."""


def parse_tasks_per_node(text: str) -> list[int]:
    """``SLURM_TASKS_PER_NODE`` → tasks on each node in node order: ``"2(x3),1"`` →
    ``[2, 2, 2, 1]``. Raises ValueError for anything else."""
    counts: list[int] = []
    for item in text.split(","):
        count, _, repeat = item.partition("(x")
        if repeat:
            if not repeat.endswith(")"):
                raise ValueError(f"SLURM_TASKS_PER_NODE={text!r}: cannot read {item!r}")
            times = int(repeat[:-1])
        else:
            times = 1
        if not count.isdigit() or int(count) < 1 or times < 1:
            raise ValueError(f"SLURM_TASKS_PER_NODE={text!r}: cannot read {item!r}")
        counts += [int(count)] * times
    return counts


class Allocation:
    """A Slurm job's allocation: ``job_id``, ``nodelist`` (as Slurm writes it, e.g.
    ``dcsl-h[1-3]``), ``nodes`` (every node name, in order) and ``tasks`` (tasks on each)."""

    def __init__(self, job_id: str, nodelist: str, nodes: list[str], tasks: list[int]) -> None:
        self.job_id = job_id
        self.nodelist = nodelist
        self.nodes = nodes
        self.tasks = tasks

    def __repr__(self) -> str:
        return (f"Allocation(job_id={self.job_id!r}, nodelist={self.nodelist!r}, "
                f"nodes={self.nodes!r}, tasks={self.tasks!r})")

    @property
    def label(self) -> str:
        """``Slurm allocation 12 (dcsl-h[1-3], 3 tasks)``: how messages name it."""
        return f"Slurm allocation {self.job_id} ({self.nodelist}, {sum(self.tasks)} tasks)"

    def hosts(self, n: int | None = None) -> list[Host]:
        """The first ``n`` tasks (default: all) as peers-file hosts: each node with its tasks,
        in Slurm's task order, nodes without any of those tasks left out. Raises SlurmError if
        ``n`` exceeds the allocation's tasks."""
        from .peers import Host

        total = sum(self.tasks)
        if n is not None and n > total:
            raise SlurmError(f"-n {n}: the {self.label} has only {total}")
        left = total if n is None else n
        hosts = []
        for name, count in zip(self.nodes, self.tasks):
            if left == 0:
                break
            hosts.append(Host(name, min(count, left), 0))
            left -= hosts[-1].slots
        return hosts


def allocation(environ: Mapping[str, str] = os.environ) -> Allocation | None:
    """The allocation this process runs in (``SLURM_JOB_ID`` set), else None.

    Runs ``scontrol show hostnames`` once to expand the node list. Raises SlurmError if the
    variables are incomplete or unreadable or scontrol fails.
    """
    job_id = environ.get("SLURM_JOB_ID")
    if not job_id:
        return None
    nodelist = environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST")
    tasks_text = environ.get("SLURM_TASKS_PER_NODE")
    if not nodelist or not tasks_text:
        raise SlurmError(f"SLURM_JOB_ID={job_id} is set but SLURM_JOB_NODELIST or "
                         "SLURM_TASKS_PER_NODE is not: not inside a whole allocation?")
    try:
        tasks = parse_tasks_per_node(tasks_text)
    except ValueError as exc:
        raise SlurmError(f"Slurm job {job_id}: {exc}") from None
    nodes = _run_slurm(["scontrol", "show", "hostnames", nodelist], f"Slurm job {job_id}").split()
    if len(nodes) != len(tasks):
        raise SlurmError(f"Slurm job {job_id}: {len(nodes)} nodes in {nodelist} but "
                         f"SLURM_TASKS_PER_NODE={tasks_text} gives {len(tasks)}")
    return Allocation(job_id, nodelist, nodes, tasks)


def _run_slurm(argv: list[str], what: str, timeout: float = 60.0) -> str:
    """Run a Slurm command; its stdout. Raises SlurmError with its last error line."""
    import subprocess

    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except OSError as exc:
        raise SlurmError(f"{what}: cannot run {argv[0]}: {exc.strerror or exc}") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{what}: {' '.join(argv)} did not end within {timeout:g} s") from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        detail = "; ".join(lines[-3:]) or f"exit {done.returncode}"
        raise SlurmError(f"{what}: {' '.join(argv[:2])} failed: {detail}")
    return done.stdout


class SbcastStage:
    """``--files`` inside a Slurm allocation, with :class:`.staging.Stage`'s interface: the
    same per-host directories (``root/K`` for the K-th node of the allocation), made on every
    node of ``alloc`` by Slurm instead of ssh.

    :meth:`ship` blocks until every node has the files or raises StagingError naming the job
    and Slurm's error line; :meth:`remove` never raises.
    """

    def __init__(self, alloc: Allocation, base: str | None = None) -> None:
        from .staging import BASE

        self.alloc = alloc
        self.root = os.path.join(base or BASE, f"distrcomp-{os.urandom(8).hex()}")
        self.created: set[int] = set()

    def directory(self, index: int) -> str:
        """Working directory of the nodes on the allocation's node ``index``."""
        return os.path.join(self.root, str(index))

    def _step(self, command: str) -> list[str]:
        """One task on each node of the allocation runs ``command`` (``$SLURM_NODEID`` is the
        node's index in the allocation)."""
        n = str(len(self.alloc.nodes))
        return ["srun", "--nodes", n, "--ntasks", n, "--ntasks-per-node", "1",
                "--kill-on-bad-exit=1", "sh", "-c", command]

    def commands(self) -> list[list[str]]:
        """The Slurm command lines :meth:`ship` runs (``--dry-run`` shows them)."""
        import shlex

        archive = self.root + ".tar"
        unpack = (f"umask 077 && mkdir -p {shlex.quote(self.root)}/$SLURM_NODEID && "
                  f"tar -x -f {shlex.quote(archive)} --no-same-owner "
                  f"-C {shlex.quote(self.root)}/$SLURM_NODEID; status=$?; "
                  f"rm -f {shlex.quote(archive)}; exit $status")
        return [["sbcast", "--force", "<tar of the files>", archive], self._step(unpack)]

    def ship(self, files: Sequence[Shipped]) -> None:
        """Send one tar of ``files`` to every node once (``sbcast``), then unpack it on each."""
        import tarfile
        import tempfile

        from .staging import StagingError

        what = f"--files under Slurm job {self.alloc.job_id}"
        sbcast, unpack = self.commands()
        with tempfile.TemporaryDirectory(prefix="distrcomp-sbcast-") as scratch:
            archive = os.path.join(scratch, "files.tar")
            try:
                with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
                    for item in files:
                        tar.add(str(item.path), arcname=item.name, recursive=True)
            except OSError as exc:
                raise StagingError(f"--files: cannot read {exc.filename}: {exc.strerror}") \
                    from None
            self.created = set(range(len(self.alloc.nodes)))
            try:
                _run_slurm([sbcast[0], sbcast[1], archive, sbcast[3]], what, _STEP_TIMEOUT)
                _run_slurm(unpack, what, _STEP_TIMEOUT)
            except SlurmError as exc:
                raise StagingError(str(exc)) from None

    def remove(self) -> list[str]:
        """Delete the job's directory on every node (one ``srun`` step); one message if that
        failed, naming the job and Slurm's error line. Never raises."""
        if not self.created:
            return []
        self.created.clear()
        import shlex

        try:
            _run_slurm(self._step(f"rm -rf -- {shlex.quote(self.root)} "
                                  f"{shlex.quote(self.root + '.tar')}"),
                       f"Slurm job {self.alloc.job_id}", _STEP_TIMEOUT)
        except SlurmError as exc:
            return [f"distrcomp: could not remove {self.root}: {exc}"]
        return []

    def describe(self) -> list[str]:
        """Where the files are, one line per node (for ``--keep-files``)."""
        return [f"distrcomp: files kept in {self.directory(i)} on {name}"
                for i, name in enumerate(self.alloc.nodes)]


def without_slurm_option(words: Sequence[str]) -> list[str]:
    """``distrcomp run`` arguments with the first ``--slurm OPTS`` / ``--slurm=OPTS`` taken out
    (the one before the command that the parser read)."""
    words = list(words)
    for position, word in enumerate(words):
        if word == "--":
            break
        if word == "--slurm":
            return words[:position] + words[position + 2:]
        if word.startswith("--slurm="):
            return words[:position] + words[position + 1:]
    return words


def outside_argv(options: str, run_words: Sequence[str]) -> list[str]:
    """``salloc OPTS -- python -m distrcomp run WORDS``: the allocation, and the same run inside
    it. ``options`` are split as the shell would (ValueError if they cannot be)."""
    import shlex

    return ["salloc", *shlex.split(options), "--", sys.executable, "-m", "distrcomp", "run",
            *run_words]


def run_outside(argv: Sequence[str]) -> int:
    """Run ``argv`` (from :func:`outside_argv`) and return its exit status: ``salloc``'s, which
    is the inner ``distrcomp run``'s once the allocation was granted.

    Blocks until salloc ends. salloc reports a pending allocation itself (``Pending job
    allocation N``, ``job N queued and waiting for resources``) on stderr. SIGINT, SIGTERM and
    SIGHUP that reach this process are passed to salloc as SIGTERM: while pending, salloc then
    withdraws the request; once running, it passes SIGTERM to the inner ``distrcomp run``,
    which stops its job (no step left). Returns 128 + the first such signal received, else
    salloc's status.

    From a terminal, salloc stays in this process's session (it needs the terminal, and makes
    the inner run its foreground job, so Ctrl-C goes to that run directly); otherwise it gets
    a session of its own, so that only the signals passed on here reach it.
    """
    import _signal
    import subprocess

    received: list[int] = []
    started: list[subprocess.Popen] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        for proc in started:
            proc.send_signal(_signal.SIGTERM)

    # Installed before salloc starts: a Ctrl-C as soon as salloc reports the pending request
    # must reach it, never end this process and leave salloc waiting in a session of its own.
    previous = {signum: _signal.signal(signum, forward)
                for signum in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP)}
    try:
        proc = subprocess.Popen(list(argv), start_new_session=not _stdin_is_terminal())
        started.append(proc)
        if received:
            proc.send_signal(_signal.SIGTERM)
        code = _wait_salloc(proc, received)
    finally:
        for signum, handler in previous.items():
            _signal.signal(signum, handler)
        for proc in started:  # an exception here must not leave salloc waiting on its own
            if proc.poll() is None:
                proc.send_signal(_signal.SIGTERM)
                proc.wait()
    if received:
        return 128 + received[0]
    return code if code >= 0 else 128 - code


_SALLOC_GRACE = 30.0  # seconds salloc gets to end after SIGTERM (its job's nodes stop first)


def _wait_salloc(proc, received: list[int]) -> int:
    """``proc.wait()``, but once a signal was passed on (``received``), at most
    ``_SALLOC_GRACE`` seconds more: salloc has been seen to withdraw a pending request
    ("Job aborted due to signal") and then never exit. Then it is killed, and said so."""
    import subprocess
    import time

    deadline = None
    while True:
        try:
            return proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            if not received:
                continue
            if deadline is None:
                deadline = time.monotonic() + _SALLOC_GRACE
            elif time.monotonic() >= deadline:
                proc.kill()
                sys.stderr.write(f"distrcomp: salloc had not ended {_SALLOC_GRACE:g} s after "
                                 "SIGTERM: killed it (squeue shows whether its request is "
                                 "gone)\n")
                return proc.wait()


def _stdin_is_terminal() -> bool:
    try:
        return os.isatty(0)
    except OSError:
        return False

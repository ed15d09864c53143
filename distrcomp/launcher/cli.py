"""The ``distrcomp`` command: ``distrcomp run`` launches a program on the nodes and relays
their output; ``distrcomp hostfile`` shows the hostfile a peers file becomes.

Usage errors (bad option, bad peers file, no MPI found) print one line on stderr and exit 2
before anything is launched. Nothing here imports ``mpi4py``.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the launcher's start-up)
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
del TYPE_CHECKING
# argparse, and shlex, import re and with it enum: ~10 ms of start-up with building the parser,
# which delays every node. A plain `distrcomp run` is read by _fast_run_args; anything else
# (help, --version, hostfile, an abbreviated option, any error) by argparse, which is imported
# only then.

__all__ = ["console", "main"]

_RUN_DESCRIPTION = """\
Run COMMAND as N nodes under mpiexec and relay every node's output, line by line, tagged with
the node id and host:

    [node 2 · 10.0.0.3] text

A line is never split or mixed with another node's line (one longer than 4 MiB is passed on
in pieces, each tagged). stdout lines go to stdout, stderr lines to stderr; the summary (total
time; on failure, a table of the nodes that failed with their last stderr lines) goes to
stderr.

Nodes: with a peers file (--peers FILE, or ./peers.txt if present), one host per line, nodes
placed in file order, `host slots=N` or `host:N` for several nodes on a host; -n takes the
first N slots. Inside a Slurm allocation (SLURM_JOB_ID set), without one, the nodes are the
allocation's tasks. Otherwise -n N nodes (default 1) run on this machine.

The first node that fails (non-zero exit, killed, MPI_Abort, or lost) ends the job: every
other node is stopped (SIGTERM, then SIGKILL after a few seconds) and no process of the job
survives the launcher. Ctrl-C does the same (a second Ctrl-C kills at once). What a node's
command leaves running, also outside its process group, is stopped when the command ends, and
the shared memory MPI leaves in /dev/shm on this machine (MPICH, when nodes are stopped) is
removed when the job ends.
Piped input goes to node 0; the others read none.

Python nodes write their output unbuffered (PYTHONUNBUFFERED=1, as `python -u`) when this
command's stdout is a terminal, so you see each line as it is printed; into a file or a pipe
they buffer it, as Python and mpiexec do (printing many lines is then several times cheaper),
unless -u is given. A PYTHONUNBUFFERED of your own is passed on as it is.
"""

_RUN_EPILOG = """\
examples:
  distrcomp run -n 4 examples/ring.py          4 nodes on this machine
  distrcomp run --peers peers.txt prog.py ARG  one node per slot in peers.txt
  distrcomp run -n 2 -- sh -c 'g++ main.cpp && ./a.out'
  distrcomp run -n 4 --timeout 60 prog.py      stop after 60 s, say where each node waits
  distrcomp run -n 4 --stats --trace t.json prog.py   communication profile and trace
  distrcomp run -n 4 --group prog.py           each node's output as one block
  distrcomp run -n 4 --output-dir logs prog.py also logs/node-<id>.out and .err
  distrcomp run -n 2 -x OMP_NUM_THREADS=2 --mpi-args "-bind-to core" prog.py
  distrcomp run --peers peers.txt --dry-run prog.py   print it as a bare mpiexec script
  salloc -N 3 distrcomp run prog.py            one node per task of the allocation
  distrcomp run --slurm "-N 3 -t 5" prog.py    the same, salloc run for you

peers.txt:
  # comment                    blank lines and comments are ignored
  10.0.0.2                     1 slot
  10.0.0.3 slots=4             Open MPI style
  node7.cluster:2              MPICH style
  fe80::1 slots=2              IPv6 ([fe80::1]:2 in MPICH style)

exit status:
  0 all nodes succeeded; else the exit status of the node whose failure ended the job
  (128+N if killed by signal N); 124 time limit; 130 SIGINT; 143 SIGTERM; 129 SIGHUP;
  2 usage error (nothing launched)
"""

class _UsageError(Exception):
    """A problem with the command line or its inputs: one line on stderr, exit 2."""


def _parser() -> argparse.ArgumentParser:
    """The whole command line, with help; see _fast_run_args for the options it shares."""
    import argparse

    from .. import __version__
    from . import remote

    help_formatter, raw_help_formatter = _formatters()
    parser = argparse.ArgumentParser(
        prog="distrcomp",
        description="Message passing with node_id, n_node, send, recv: the launcher.",
        formatter_class=help_formatter,
    )
    parser.add_argument("--version", action="version", version=f"distrcomp {__version__}")
    commands = parser.add_subparsers(dest="subcommand",
                                     metavar="{run,hostfile,compat-path,migrate}")
    run = commands.add_parser(
        "run", help="run a program on the nodes, relaying their output",
        description=_RUN_DESCRIPTION, epilog=_RUN_EPILOG,
        formatter_class=raw_help_formatter,
        usage="distrcomp run [-n N] [--peers FILE] [options] [--] COMMAND [ARGS...]",
    )
    run.add_argument("-n", type=_positive_int, metavar="N",
                     help="number of nodes (default: every slot of the peers file, else 1)")
    run.add_argument("--peers", metavar="FILE",
                     help="peers file: one host per line (default: ./peers.txt if present)")
    run.add_argument("--timeout", type=_positive_float, metavar="SECONDS",
                     help="stop every node after SECONDS, exit 124; first say where each "
                          "Python node is blocked and name the deadlock (also on SIGUSR1 to "
                          "this command, without stopping)")
    run.add_argument("--stats", action="store_true",
                     help="at the end, print each node's messages, bytes and time blocked, "
                          "and the bytes each node sent to each")
    run.add_argument("--trace", metavar="FILE",
                     help="write every send, arrival and wait of each node to FILE (Trace "
                          "Event Format JSON: Perfetto, chrome://tracing, vizviewer)")
    layout = run.add_mutually_exclusive_group()
    layout.add_argument("--group", action="store_true",
                        help="print each node's whole output (stdout and stderr lines as they "
                             "came) as one block on stdout when it finishes, in node order")
    layout.add_argument("--no-tag", action="store_true",
                        help="no [node ...] prefix: the nodes' bytes as written (lines still "
                             "whole)")
    run.add_argument("-u", "--unbuffered", action="store_true",
                     help="Python nodes write unbuffered even when this command's output is not "
                          "a terminal (live lines in a log or a pipe, at a cost per line)")
    run.add_argument("--output-dir", metavar="DIR",
                     help="also write node-<id>.out and node-<id>.err for each node into DIR")
    run.add_argument("--mpi-args", default="", metavar='"ARGS"',
                     help="extra options for mpiexec, as one shell-quoted string")
    run.add_argument("-x", dest="env", action="append", default=[], metavar="VAR[=VALUE]",
                     help="forward environment variable VAR to every node (setting it to "
                          "VALUE first); repeatable")
    run.add_argument("--mpi", choices=_MPI_NAMES,
                     help="the MPI to use: exit 2 if the one found is another (with --dry-run: "
                          "assume it, to print a script for another machine)")
    run.add_argument("--allow-run-as-root", action="store_true",
                     help="Open MPI: give its consent to run as root (its own "
                          "--allow-run-as-root); without it, or OMPI_ALLOW_RUN_AS_ROOT=1 and "
                          "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1, a job as root exits 2 at once")
    run.add_argument("--dry-run", action="store_true",
                     help="run nothing; print a shell script that runs the same nodes under bare "
                          "mpiexec (hostfile and ssh program written by it into a new temporary "
                          "directory; without distrcomp's node wrapper and relay)")
    run.add_argument("--legacy-master", metavar="MASTER_PY",
                     help="run the old DistrComp master.py's `commands` in order on every node, "
                          "each with its `timelimit`, all of them even after one fails, "
                          "`python` being this interpreter; output as the old master printed "
                          "it: one block per node, then the total time; master.py is read, "
                          "never executed (only literals, and names assigned a literal once, "
                          "are accepted); its `files` are shipped as with --files")
    remote.add_options(run)
    run.add_argument_group(
        "Slurm",
        "Inside an allocation (SLURM_JOB_ID set, no peers file) the nodes are the allocation's\n"
        "tasks, in Slurm's order, tagged with the Slurm node names; -n N takes the first N. The\n"
        "MPI starts them through Slurm; --files goes out by sbcast (docs/slurm.md).",
    ).add_argument("--slurm", metavar='"OPTS"',
                   help="from a login node: get an allocation with `salloc OPTS`, run this same "
                        "command inside it, give it back")
    run.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND",
                     help="program and arguments; a .py file runs with this Python")

    commands.add_parser(
        "compat-path", help="print the directory of the legacy `message` module",
        formatter_class=help_formatter,
        description="Print the directory holding distrcomp's drop-in `message` module, for "
                    "legacy scripts under plain mpiexec: "
                    "PYTHONPATH=$(distrcomp compat-path) mpiexec -n 4 python legacy.py",
    )
    from ..migrate import add_parser as add_migrate

    add_migrate(commands, help_formatter)
    hostfile = commands.add_parser(
        "hostfile", help="print the hostfile a peers file becomes", formatter_class=help_formatter,
        description="Print the hostfile for the MPI installed (or --format) from a peers file.",
    )
    hostfile.add_argument("file", metavar="FILE", help="peers file")
    hostfile.add_argument("--format", choices=("mpich", "openmpi"),
                          help="hostfile syntax (default: that of the installed MPI)")
    return parser


def _columns() -> int:
    """The terminal's width as ``shutil.get_terminal_size`` finds it: a positive ``$COLUMNS``,
    else the width of the terminal on stdout, else 80."""
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns > 0:
        return columns
    try:
        columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
    except (AttributeError, ValueError, OSError):
        columns = 0
    return columns if columns > 0 else 80


def _formatters() -> tuple[type, type]:
    """The help formatters of :func:`_parser`: argparse's, for the terminal's width."""
    import argparse

    class HelpFormatter(argparse.HelpFormatter):
        """argparse's formatter, given the terminal width so that it does not import ``shutil``
        to ask (argparse makes one for every option added: 1.4 ms)."""

        def __init__(self, prog: str) -> None:
            super().__init__(prog, width=_columns() - 2)

    class RawHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
        """:class:`HelpFormatter` keeping the description's and epilog's line breaks."""

    return HelpFormatter, RawHelpFormatter


def _type_error(message: str) -> Exception:
    """argparse's ArgumentTypeError (argparse imported only for a value that is wrong)."""
    import argparse

    return argparse.ArgumentTypeError(message)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _type_error(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise _type_error(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _type_error(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise _type_error(f"expected a positive number of seconds, got {text!r}")
    return value


_GLUED = ("--mpi-args", "--slurm")  # options whose value usually starts with "-"


def _glue_mpi_args(argv: list[str]) -> list[str]:
    """``--mpi-args "-x y"`` → ``--mpi-args=-x y`` (``--slurm -N3`` too): argparse would take a
    value that starts with ``-`` for an option. Only before the command (the first ``--`` or
    ``*.py`` word)."""
    glued: list[str] = []
    words = iter(argv)
    for word in words:
        if word == "--" or word.endswith(".py"):
            glued.append(word)
            glued.extend(words)
            break
        if word in _GLUED:
            word = f"{word}={next(words, '')}"
        glued.append(word)
    return glued


_MPI_NAMES = ("mpich", "openmpi")  # the choices of --mpi


def _mpi_name(text: str) -> str:
    """``--mpi``'s value, for _fast_run_args (argparse checks its ``choices`` itself)."""
    if text not in _MPI_NAMES:
        raise ValueError(text)
    return text


# The options of `distrcomp run` as _fast_run_args reads them, by option string: the flags
# (store_true), the options that take one value (dest, conversion; the last given wins) and
# those that collect theirs. _parser declares the same ones, with their help, and any form
# beyond these; tests/unit/test_cli_args.py checks that both read every command line alike.
_RUN_FLAGS = {
    "--group": "group", "--no-tag": "no_tag", "-u": "unbuffered", "--unbuffered": "unbuffered",
    "--dry-run": "dry_run", "--no-check": "no_check", "--keep-files": "keep_files",
    "--allow-run-as-root": "allow_run_as_root", "--stats": "stats",
}
_RUN_VALUES = {
    "-n": ("n", _positive_int), "--peers": ("peers", str), "--timeout": ("timeout", _positive_float),
    "--output-dir": ("output_dir", str), "--mpi-args": ("mpi_args", str), "--mpi": ("mpi", _mpi_name),
    "--legacy-master": ("legacy_master", str), "--ssh-config": ("ssh_config", str),
    "--launcher-address": ("launcher_address", str), "--files": ("files", str),
    "--slurm": ("slurm", str), "--trace": ("trace", str),
}
_RUN_APPEND = {"-x": "env"}
_RUN_DEFAULTS = {"mpi_args": "", "files": ""}  # others: None for values, False for flags


class _RunArgs:
    """What _fast_run_args read: the attributes argparse's Namespace would have."""

    def __init__(self, values: dict) -> None:
        self.__dict__.update(values)


def _fast_run_args(words: list[str]) -> _RunArgs | None:
    """``distrcomp run`` read without argparse, when ``words`` (after :func:`_glue_mpi_args`)
    are ``run``, options exactly as in the tables above (``--name=value`` too for the long
    ones), then the command; None for anything else, which argparse then reads (and reports).
    The result is what argparse would give (tests/unit/test_cli_args.py)."""
    if words[:1] != ["run"]:
        return None
    values: dict = {dest: False for dest in _RUN_FLAGS.values()}
    values.update({dest: None for dest, _ in _RUN_VALUES.values()})
    values.update({dest: [] for dest in _RUN_APPEND.values()})
    values.update(_RUN_DEFAULTS)
    values["subcommand"] = "run"
    position = 1
    while position < len(words):
        word = words[position]
        if word == "--" or not word.startswith("-"):
            break
        name, equals, value = word.partition("=") if word.startswith("--") else (word, "", "")
        if value == "--":  # argparse reads `--name=--` as an empty list
            return None
        position += 1
        if name in _RUN_FLAGS and not equals:
            values[_RUN_FLAGS[name]] = True
            continue
        if name not in _RUN_VALUES and name not in _RUN_APPEND:
            return None
        if not equals:
            if position == len(words) or words[position].startswith("-"):
                return None
            value = words[position]
            position += 1
        if name in _RUN_APPEND:
            values[_RUN_APPEND[name]].append(value)
            continue
        dest, convert = _RUN_VALUES[name]
        try:
            values[dest] = convert(value)
        except Exception:  # noqa: BLE001 - ArgumentTypeError; argparse reads it again, says why
            return None
    if values["group"] and values["no_tag"]:
        return None
    values["command"] = words[position:]
    return _RunArgs(values)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``distrcomp`` console script; returns the exit code."""
    words = _glue_mpi_args(list(sys.argv[1:] if argv is None else argv))
    args = _fast_run_args(words)
    parser = None
    if args is None:
        parser = _parser()
        args = parser.parse_args(words)
    try:
        if args.subcommand == "run":
            if args.slurm is not None:
                return _run_in_new_allocation(args.slurm, words[1:], args.dry_run)
            return _run(args)
        if args.subcommand == "hostfile":
            return _hostfile(args)
        if args.subcommand == "migrate":
            from ..migrate import MigrateError, run_migrate

            try:
                return run_migrate(args)
            except MigrateError as exc:
                raise _UsageError(f"migrate: {exc}") from None
        if args.subcommand == "compat-path":
            from .script import compat_dir

            sys.stdout.write(compat_dir() + "\n")
            return 0
    except _UsageError as exc:
        sys.stderr.write(f"distrcomp: {exc}\n")
        return 2
    (parser or _parser()).print_help(sys.stderr)
    return 2


def console() -> None:
    """The ``distrcomp`` command (console script, ``python -m distrcomp``): :func:`main`, then
    exit with its code at once, without the interpreter's finalisation.

    By then every node process is reaped, every output file closed and the scratch directory
    removed; finalising the launcher's modules would only keep the shell waiting (~8 ms, a
    fifth of the launcher's own start-up). stdout and stderr are flushed first; if that fails
    (a closed pipe) the exit code is 120, as Python's own exit gives.
    """
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        code = code or 120
    os._exit(code)


def _flavor(name: str | None, dry_run: bool = False):
    """The MPI to launch with: the one installed, which must be ``name`` if given; with
    ``dry_run``, ``name`` as given (a script for another machine)."""
    from .flavor import MPIError, check_installed, detect, forced

    if name and dry_run:
        return forced(name)
    try:
        return check_installed(name) if name else detect()
    except MPIError as exc:
        raise _UsageError(str(exc)) from None


def _read_peers(path: str):
    from .peers import PeersFileError, read_peers

    try:
        return read_peers(path)
    except PeersFileError as exc:
        raise _UsageError(str(exc)) from None


def _render(hosts, flavor_name: str, path: str) -> str:
    from .hostfile import HostfileError, render

    try:
        return render(hosts, flavor_name)
    except HostfileError as exc:
        raise _UsageError(f"{path}:{exc.line}: {exc.reason}") from None


def _hostfile(args: argparse.Namespace) -> int:
    hosts = _read_peers(args.file)
    flavor_name = args.format or _flavor(None).name
    sys.stdout.write(_render(hosts, flavor_name, args.file))
    return 0


def _run(args: argparse.Namespace) -> int:
    from .command import user_command

    words = list(args.command)
    if words[:1] == ["--"]:
        words = words[1:]
    if args.legacy_master:
        if words:
            raise _UsageError("run: give either --legacy-master or a COMMAND, not both")
        return _run_legacy_master(args)
    if not words:
        raise _UsageError("run: no COMMAND given (distrcomp run --help shows examples)")
    if words[0].endswith(".py") and not os.path.isfile(words[0]):
        raise _UsageError(f"run: {words[0]}: no such file")
    env = _forwarded_env(args)
    notes: list[str] = []
    files: list[str] = []
    if args.files:
        from .staging import parse_files

        files = parse_files(args.files)
    command = _prepared(user_command(words), words, env, notes, files)
    spec, names = _job_spec(args, command, env, args.timeout, args.group)
    _say(notes)
    return _launch(args, [spec], names)


def _run_in_new_allocation(options: str, run_words: list[str], dry_run: bool) -> int:
    """``--slurm OPTS``: the same ``distrcomp run`` inside ``salloc OPTS`` (see .slurm)."""
    import shlex

    from .slurm import outside_argv, run_outside, without_slurm_option

    try:
        argv = outside_argv(options, without_slurm_option(run_words))
    except ValueError as exc:
        raise _UsageError(f"--slurm {options!r}: {exc}") from None
    if dry_run:
        sys.stdout.write("# Slurm allocation, and this same command (a dry run) inside it:\n"
                         + shlex.join(argv) + "\n")
        return 0
    try:
        return run_outside(argv)
    except OSError as exc:
        raise _UsageError(f"--slurm: cannot run salloc: {exc.strerror or exc}") from None


def _allocation():
    """The Slurm allocation this runs in, if any (distrcomp/launcher/slurm.py)."""
    if not os.environ.get("SLURM_JOB_ID"):
        return None
    from .slurm import SlurmError, allocation

    try:
        return allocation()
    except SlurmError as exc:
        raise _UsageError(f"run: {exc}") from None


def _spec_peers(args: argparse.Namespace) -> str | None:
    """The peers file in use: --peers, else ./peers.txt if present, else None."""
    if args.peers is not None:
        return args.peers
    return "peers.txt" if os.path.isfile("peers.txt") else None


def _forwarded_env(args: argparse.Namespace) -> dict[str, str | None]:
    env: dict[str, str | None] = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not (name.isascii() and name.isidentifier()):  # [A-Za-z_][A-Za-z0-9_]*
            raise _UsageError(f"-x {item}: {name!r} is not a valid environment variable name")
        env[name] = value if sep else None
    return env


def _say(notes: list[str]) -> None:
    """The launcher's notes before a launch, one line each on stderr."""
    sys.stderr.write("".join(f"distrcomp: {note}\n" for note in notes))
    sys.stderr.flush()


def _prepared(command: list[str], words: list[str], env: dict[str, str | None],
              notes: list[str], files: Sequence[str] = ()) -> list[str]:
    """``command`` (``words`` as the nodes run them) checked before launch when it runs a
    Python script (``prog.py``, ``python -B prog.py``), see :func:`_check_script`, and changed
    to run the script through :mod:`distrcomp.runscript`, which sees any ``SystemExit`` that
    ends it (a bare ``raise SystemExit(3)`` on one node then ends the job), when the
    interpreter is one of the launcher's own environment (another may not have distrcomp).
    When the script imports ``message`` and the old library's ``message.py`` lies beside it (or
    among ``files``), it runs with the drop-in instead, and a line added to ``notes`` says so
    (printed once nothing can stop the launch for bad input)."""
    from ..runscript import command as script_command
    from .script import python_script, shadowing_message

    index = python_script(words)
    if index is None or not os.path.isfile(words[index]):
        return command
    script = words[index]
    old = shadowing_message(script, files) if _check_script(script, env) else None
    if old is not None:
        notes.append(f"{old} is the old DistrComp library's message module; {script} runs with "
                     "distrcomp's drop-in message module instead")
    if old is None and not _in_this_environment(command[0]):
        return command  # another Python, which may not have distrcomp: the script as given
    return script_command(command, index + len(command) - len(words), dropin=old is not None)


def _in_this_environment(python: str) -> bool:
    """Whether the interpreter ``python`` (a path, or a name looked up on PATH as the nodes'
    exec will) lives beside the launcher's own, in the same environment, which has distrcomp.
    (shutil only for a bare name: it is ~3 ms of the launcher's start-up, which delays every
    node, and ``prog.py`` runs with this interpreter's path.)"""
    if os.sep not in python:
        import shutil

        python = shutil.which(python) or ""
    here = os.path.dirname(os.path.abspath(sys.executable))
    return bool(python) and os.path.dirname(os.path.abspath(python)) == here


def _check_script(script: str, env: dict[str, str | None]) -> bool:
    """Refuse a script that does not compile (one message, before any node starts); put the
    legacy ``message`` module on the nodes' path for a script that imports it, and return
    whether it does."""
    from .script import py2_problem, uses_legacy_message, with_compat_path

    try:
        problem = py2_problem(script)
    except OSError as exc:
        raise _UsageError(f"run: cannot read {script}: {exc.strerror or exc}") from None
    if problem is not None:
        raise _UsageError(problem)
    if not uses_legacy_message(script):
        return False
    base = {"PYTHONPATH": env["PYTHONPATH"]} if env.get("PYTHONPATH") else os.environ
    env["PYTHONPATH"] = with_compat_path(base)["PYTHONPATH"]
    return True


def _shell_words(command: str, source: str) -> list[str]:
    import shlex

    try:
        return shlex.split(command)
    except ValueError as exc:
        raise _UsageError(f"{source}: command {command!r} is not valid shell: {exc}") from None


def _buffering(unbuffered: bool) -> dict[str, str | None]:
    """How the nodes' Python buffers its output, as variables to forward (see the run help)."""
    if "PYTHONUNBUFFERED" in os.environ:
        return {"PYTHONUNBUFFERED": None}  # the user's own, passed on
    if unbuffered or os.isatty(1):
        return {"PYTHONUNBUFFERED": "1"}
    return {}


def _refuse_unheld_loopback(hosts, peers: str) -> None:
    """A loopback address no interface holds (127.0.0.2) would be started over ssh by the MPI
    although the launcher takes it for this machine: refused with its line, before launch."""
    from .address import loopback_unheld

    for host in hosts:
        if loopback_unheld(host.name):
            raise _UsageError(f"{peers}:{host.line}: {host.name} is a loopback address of this "
                              "machine that no interface holds, which MPI would reach over ssh; "
                              "write localhost for this machine")


def _split_mpi_args(text: str) -> list[str]:
    """``--mpi-args`` as words, as the shell splits them (``shlex``, imported only for some)."""
    if not text.strip():
        return []
    import shlex

    return shlex.split(text)


def _job_spec(args, command: list[str], env: dict[str, str | None], timeout, grouped: bool):
    """``(JobSpec, host of each node)`` for one launch of ``command``."""
    from .flavor import ROOT_OPTION, root_refusal
    from .job import JobSpec

    peers = _spec_peers(args)
    flavor = _flavor(args.mpi, args.dry_run)
    hostfile_text = None
    args.allocation = _allocation() if peers is None else None
    if args.allocation is not None:
        from .peers import node_hosts
        from .slurm import SlurmError

        try:
            hosts = args.allocation.hosts(args.n)
        except SlurmError as exc:
            raise _UsageError(f"run: {exc}") from None
        names = node_hosts(hosts)
        hostfile_text = _render(hosts, flavor.name, args.allocation.label)
    elif peers is not None:
        from .peers import node_hosts

        hosts = _read_peers(peers)
        _refuse_unheld_loopback(hosts, peers)
        try:
            names = node_hosts(hosts, args.n)
        except ValueError as exc:
            raise _UsageError(f"{peers}: {exc}") from None
        hostfile_text = _render(hosts, flavor.name, peers)
    else:
        names = ["localhost"] * (args.n or 1)
    try:
        mpi_args = _split_mpi_args(args.mpi_args)
    except ValueError as exc:
        raise _UsageError(f"--mpi-args: {exc}") from None
    if args.allow_run_as_root and flavor.name == "openmpi" and ROOT_OPTION not in mpi_args:
        mpi_args.insert(0, ROOT_OPTION)
    refusal = root_refusal(flavor, mpi_args)
    if refusal is not None and not args.dry_run:
        raise _UsageError(f"run: {refusal}")
    if all(name == "localhost" for name in names):
        mpi_args = [*flavor.one_machine_args(mpi_args), *mpi_args]
    env = {**env, **_buffering(args.unbuffered), **_profile_env(args)}
    spec = JobSpec(
        command=command, hosts=names, flavor=flavor, hostfile_text=hostfile_text,
        mpi_args=mpi_args, env=env, timeout=timeout, tagged=not args.no_tag,
        grouped=grouped, output_dir=args.output_dir, stats=args.stats, trace=args.trace,
    )
    return spec, names


def _profile_env(args) -> dict[str, str]:
    """What makes the nodes keep a profile (distrcomp.diag): ``--trace`` needs one with
    events, ``--stats`` one without. Raises _UsageError if the trace file's directory is
    missing."""
    if args.trace is not None:
        folder = os.path.dirname(os.path.abspath(args.trace))
        if not os.path.isdir(folder):
            raise _UsageError(f"--trace {args.trace}: directory {folder} does not exist")
        return {"DISTRCOMP_PROFILE": "trace"}
    return {"DISTRCOMP_PROFILE": "stats"} if args.stats else {}


def _launch(args: argparse.Namespace, specs: list, names: list[str], labels: list[str] = (),
            extra_files: Sequence[str] = (), keep_going: bool = False) -> int:
    """Run ``specs`` one after the other on the same hosts (one pre-flight, one staging of the
    shipped files); stop at the first that fails and return its exit code, or, with
    ``keep_going`` (a legacy master.py: the old master ran every command), run every spec
    unless the launcher is interrupted, return the first failure's exit code, and leave the
    total time to the caller. ``labels`` name the specs on stderr as they start."""
    from .job import Job
    from .remote import Remote, RemoteError

    if args.output_dir is not None and not args.dry_run:
        _make_output_dir(args.output_dir)
    try:  # multi-host: address, ssh, pre-flight, --files (distrcomp/launcher/remote.py)
        site = Remote.plan(args, names, specs[0].flavor, extra_files,
                           allocation=getattr(args, "allocation", None))
        for spec in specs:
            site.apply(spec)
        if args.dry_run:
            ssh_program = site.ssh_program
            site.discard()
            from .dryrun import script

            source = args.allocation.label if getattr(args, "allocation", None) \
                else _spec_peers(args)
            for spec in specs:
                sys.stdout.write(script(spec, source, ssh_program, args.ssh_config,
                                        site.dry_run_lines()))
            return 0
        with site.prepared():
            since = time.monotonic()
            failed = 0
            for number, spec in enumerate(specs):
                if labels:
                    sys.stderr.write(f"distrcomp: command {number + 1} of {len(specs)}: "
                                     f"{labels[number]}\n")
                    sys.stderr.flush()
                last = number == len(specs) - 1 and not keep_going
                job = Job(spec, since=since, last=last)
                code = job.run()
                if code != 0 and (not keep_going or job.stop_reason == "signal"):
                    return code
                failed = failed or code
            return failed
    except RemoteError as exc:
        raise _UsageError(f"run: {exc}") from None
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM before the job began; files removed
        return 128 + getattr(exc, "signum", 2)
    except OSError as exc:  # mpiexec cannot be started, no socket can be bound, ...
        raise _UsageError(f"run: cannot launch {specs[0].flavor.mpiexec}: {exc}") from None


def _make_output_dir(path: str) -> None:
    """Make the ``--output-dir`` directory (and its parents) before anything is launched, so
    that a path that cannot be one is a usage error that names it."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise _UsageError(f"--output-dir {path}: not a directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise _UsageError(f"--output-dir {path}: cannot make the directory: "
                          f"{exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise _UsageError(f"--output-dir {path}: cannot write into it")


def _run_legacy_master(args: argparse.Namespace) -> int:
    """The old master.py: each of its ``commands`` in order, on every node, each with
    ``timelimit`` (``--timeout`` wins), all of them even after one fails; ``python`` in a
    command is this interpreter. Output as the old master printed it (:mod:`.blocks`; raw with
    ``--no-tag``), then ``Total time : 1.523.`` on stdout. Returns the exit status of the first
    command that failed, else 0."""
    from .blocks import Blocks
    from .legacy import LegacyMasterError, read_master
    from .relay import Sink
    from .script import with_compat_path

    started = time.monotonic()
    try:
        master = read_master(args.legacy_master)
    except LegacyMasterError as exc:
        raise _UsageError(str(exc)) from None
    except OSError as exc:
        raise _UsageError(f"run: cannot read {args.legacy_master}: {exc.strerror or exc}") \
            from None
    timeout = args.timeout if args.timeout is not None else master.timelimit
    env = _forwarded_env(args)
    # the old tool's commands ran old scripts: check each one
    notes: list[str] = []
    commands = [_master_command(command, args.legacy_master, env, master.files, notes)
                for command in master.commands]
    env["PYTHONPATH"] = with_compat_path(
        {"PYTHONPATH": env["PYTHONPATH"]} if env.get("PYTHONPATH") else os.environ
    )["PYTHONPATH"]
    built = [_job_spec(args, command, dict(env), timeout, grouped=False) for command in commands]
    specs = [spec for spec, _ in built]
    names = built[0][1]
    _say(notes)
    blocks = None
    if not (args.no_tag or args.dry_run):
        blocks = Blocks(names, len(specs), Sink(1))
        for spec in specs:
            spec.blocks = blocks
    code = _launch(args, specs, names, labels=master.commands, extra_files=master.files,
                   keep_going=True)
    if blocks is not None:
        blocks.close()
    if not args.dry_run:
        sys.stdout.write(f"Total time : {time.monotonic() - started:.3f}.\n")
    return code


# Characters that make a command more than words for the shell (the old tool ran every
# command as whitespace-separated words, without a shell).
_SHELL_SYNTAX = frozenset("|&;<>()$`*?[]{}~#!\n")


def _master_command(command: str, source: str, env: dict[str, str | None],
                    files: Sequence[str], notes: list[str]) -> list[str]:
    """What the nodes run for one command of a master.py. A plain command (words only) runs
    as those words, ``python`` (any ``python*`` word) being this interpreter, the script
    checked as ``distrcomp run``'s (:func:`_prepared`); anything else through ``sh -c``, its
    leading ``python`` word still this interpreter, each ``.py`` file it names checked."""
    import shlex

    from .command import user_command
    from .script import is_python

    words = _shell_words(command, source)
    python = bool(words) and is_python(words[0])
    if words and not _SHELL_SYNTAX.intersection(command):
        argv = [sys.executable, *words[1:]] if python else user_command(words)
        return _prepared(argv, words, env, notes, files)
    for word in words:
        if word.endswith(".py") and os.path.isfile(word):
            _check_script(word, env)
    text = command.lstrip()
    if python and text.startswith(words[0]):
        command = shlex.quote(sys.executable) + text[len(words[0]):]
    return ["sh", "-c", command]


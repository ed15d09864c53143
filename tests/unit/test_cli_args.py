"""``distrcomp run``'s command line read without argparse (cli._fast_run_args) against argparse.

The fast reader saves the launcher importing argparse and re (and enum) before it can start
mpiexec; it must read every command line it accepts exactly as argparse does, and give the
rest to argparse.
"""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distrcomp.launcher import cli


def _run_parser() -> argparse.ArgumentParser:
    commands = next(action for action in cli._parser()._actions
                    if isinstance(action, argparse._SubParsersAction))
    return commands.choices["run"]


def _by_argparse(words: list[str]) -> dict | None:
    """What argparse reads from ``words``; None where it refuses them (usage error)."""
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            return vars(cli._parser().parse_args(words))
        except SystemExit:
            return None


def _read_alike(argv: list[str]) -> bool:
    """Whether the fast reader took ``run ARGV``, after checking that it read it as argparse."""
    words = cli._glue_mpi_args(["run", *argv])
    fast = cli._fast_run_args(words)
    if fast is None:
        return False
    assert vars(fast) == _by_argparse(words), argv
    return True


def test_the_tables_declare_every_run_option_as_the_parser_does():
    # each option of the argparse parser is in exactly one of the fast reader's tables, with
    # the same dest, kind and default, and the tables hold nothing else
    seen = set()
    for action in _run_parser()._actions:
        if not action.option_strings:
            assert action.dest == "command"
            continue
        for option in action.option_strings:
            if option in ("-h", "--help"):
                continue
            seen.add(option)
            if isinstance(action, argparse._StoreTrueAction):
                assert cli._RUN_FLAGS.get(option) == action.dest, option
            elif isinstance(action, argparse._AppendAction):
                assert cli._RUN_APPEND.get(option) == action.dest, option
                assert action.default == [], option
            else:
                assert type(action) is argparse._StoreAction, option
                assert cli._RUN_VALUES[option][0] == action.dest, option
                assert action.default == cli._RUN_DEFAULTS.get(action.dest), option
                assert action.nargs is None, option
    assert seen == {*cli._RUN_FLAGS, *cli._RUN_VALUES, *cli._RUN_APPEND}


@pytest.mark.parametrize("argv", [
    ["prog.py"],
    ["-n", "4", "examples/ring.py"],
    ["-n", "4", "ring.py", "-n", "3", "--group"],  # the command's own options stay its own
    ["--peers", "peers.txt", "--timeout", "60", "--group", "prog.py", "ARG"],
    ["-n", "2", "--", "sh", "-c", "g++ main.cpp && ./a.out"],
    ["-n", "2", "-x", "OMP_NUM_THREADS=2", "-x", "HOME", "--mpi-args", "-bind-to core", "p.py"],
    ["--timeout=2.5", "--output-dir=logs", "--no-tag", "-u", "--dry-run", "--mpi", "openmpi",
     "prog.py"],
    ["--peers", "peers.txt", "--files", "a,b/", "--keep-files", "--no-check", "--ssh-config",
     "cfg", "--launcher-address", "10.0.0.1", "prog.py"],
    ["--legacy-master", "master.py"],
    ["--slurm", "-N3", "-n", "2", "prog.py"],  # glued like --mpi-args: "-N3" is its value
    ["-n", "4"],
    [],
])
def test_plain_command_lines_are_read_without_argparse_as_argparse_reads_them(argv):
    assert _read_alike(argv)


@pytest.mark.parametrize("argv", [
    ["-h"], ["--help"], ["-n", "0", "p.py"], ["-n", "x", "p.py"], ["-n4", "p.py"],
    ["-n=4", "p.py"], ["--timeout", "-1", "p.py"], ["--timeout", "inf", "p.py"],
    ["--time", "5", "p.py"], ["--group", "--no-tag", "p.py"], ["--mpi", "lam", "p.py"],
    ["--peers"], ["--peers", "--group", "p.py"], ["--group=1", "p.py"], ["-un", "2", "p.py"],
    ["--bogus", "p.py"], ["-", "p.py"],
])
def test_anything_else_is_left_to_argparse(argv):
    assert cli._fast_run_args(cli._glue_mpi_args(["run", *argv])) is None


def test_only_run_is_read_without_argparse():
    for words in (["--version"], ["hostfile", "peers.txt"], ["compat-path"], [], ["rnu"]):
        assert cli._fast_run_args(words) is None


_WORDS = st.sampled_from([
    *cli._RUN_FLAGS, *cli._RUN_VALUES, *cli._RUN_APPEND, "--", "-", "-h", "--gr", "--time",
    "4", "0", "-1", "2.5", "nan", "inf", "", " ", "a b", "-a b", "prog.py", "prog", "x.py",
    "VAR", "VAR=1", "9X=1", "mpich", "openmpi", "lam", "--peers=p", "--timeout=1", "--mpi=mpich",
    "--group=1", "-n=2", "-n2", "-un", "--mpi-args=-x y", "--files=a,b",
])


@settings(max_examples=1500, deadline=None)
@given(st.lists(_WORDS, max_size=8))
def test_every_command_line_the_fast_reader_takes_is_read_as_argparse_reads_it(argv):
    _read_alike(argv)

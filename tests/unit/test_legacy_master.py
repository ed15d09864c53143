"""read_master: an old master.py's constants, read without executing anything."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distrcomp.errors import DistrCompError
from distrcomp.launcher.legacy import LegacyMaster, LegacyMasterError, read_master


def write(tmp_path: Path, text: str, name: str = "master.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str) -> LegacyMasterError:
    with pytest.raises(LegacyMasterError) as info:
        read_master(write(tmp_path, text))
    return info.value


# ----------------------------------------------------------------------------- accepted
def test_plain_constants(tmp_path: Path) -> None:
    path = write(tmp_path, """
        files = ['job.py', 'data.txt']
        commands = ['python job.py', 'python job.py --again']
        timelimit = 60
    """)
    assert read_master(path) == LegacyMaster(
        ["job.py", "data.txt"], ["python job.py", "python job.py --again"], 60.0
    )
    assert isinstance(read_master(path).timelimit, float)


def test_old_tool_code_around_the_constants_is_ignored(tmp_path: Path) -> None:
    # The old master.py was the tool itself: constants on top, its code below. Functions may use
    # local variables with the same names; module-level code may read the constants.
    path = write(tmp_path, """
        #!/usr/bin/env python3
        \"\"\"The old master.\"\"\"
        import socket, time
        from os import path

        files = ["job.py"]      # shipped to every node
        commands = [
            "python job.py",    # first
            "echo done",
        ]
        timelimit = 2.5

        def ship(files):
            commands = []
            for files in files:
                commands.append(files)
            return commands

        class Master:
            files = None

        for command in commands:
            print(command, len(files))
        if __name__ == "__main__":
            Master().run([c for c in commands])
    """)
    assert read_master(path) == LegacyMaster(["job.py"], ["python job.py", "echo done"], 2.5)


def test_defaults_when_files_and_timelimit_are_missing(tmp_path: Path) -> None:
    master = read_master(write(tmp_path, "commands = ['hostname']\n"))
    assert master == LegacyMaster([], ["hostname"], None)


def test_tuples_annotations_and_last_assignment_wins(tmp_path: Path) -> None:
    path = write(tmp_path, """
        files: list = ('a', 'b')
        commands = ['first']
        commands = ('second', 'third')
        timelimit = 1e3
    """)
    assert read_master(path) == LegacyMaster(["a", "b"], ["second", "third"], 1000.0)


def test_chained_assignment(tmp_path: Path) -> None:
    master = read_master(write(tmp_path, "files = commands = ['x.sh']\n"))
    assert master == LegacyMaster(["x.sh"], ["x.sh"], None)


def test_implicit_string_concatenation_is_a_literal(tmp_path: Path) -> None:
    master = read_master(write(tmp_path, "commands = ['python job.py '\n    '--fast']\n"))
    assert master.commands == ["python job.py --fast"]


def test_encoding_cookie_is_honoured(tmp_path: Path) -> None:
    path = tmp_path / "master.py"
    path.write_bytes(b"# -*- coding: latin-1 -*-\ncommands = ['echo \xe9t\xe9']\n")
    assert read_master(path).commands == ["echo \u00e9t\u00e9"]


def test_python2_master_is_still_read(tmp_path: Path) -> None:
    path = write(tmp_path, """
        import sys
        files = ['job.py']
        commands = ['python job.py',
                    'python job.py 2']; timelimit = 30
        print "shipping", files
        try:
            pass
        except IOError, e:
            print >>sys.stderr, `e`
        def run(c):
            commands = 1
    """)
    assert read_master(path) == LegacyMaster(["job.py"], ["python job.py", "python job.py 2"], 30.0)


@given(
    files=st.lists(st.text(), max_size=5),
    commands=st.lists(st.text().filter(str.strip), min_size=1, max_size=5),
    timelimit=st.floats(min_value=1e-3, max_value=1e9) | st.integers(1, 10**9),
)
@settings(max_examples=60, deadline=None)
def test_any_literal_round_trips(tmp_path_factory, files, commands, timelimit) -> None:
    path = tmp_path_factory.mktemp("m") / "master.py"
    path.write_text(
        f"files = {files!r}\ncommands = {commands!r}\ntimelimit = {timelimit!r}\n", encoding="utf-8"
    )
    assert read_master(path) == LegacyMaster(files, commands, float(timelimit))


# ----------------------------------------------------------------------------- rejected
@pytest.mark.parametrize(
    "line, expected",
    [
        ("commands = get_commands()",
         "commands must be a list of strings (shell commands), got a function call (get_commands())"),
        ("commands = COMMANDS", "got a name (COMMANDS)"),
        ("commands = [f'python {job}']", "got a list containing an f-string (f'python {job}')"),
        ("commands = ['a'] + ['b']", "got an expression (['a'] + ['b'])"),
        ("commands = [c for c in 'ab']", "got a list comprehension"),
        ("commands = os.environ['CMDS']", "got a subscript"),
        ("commands = sys.argv", "got an attribute (sys.argv)"),
        ("commands = ['a', open('x').read()]", "got a list containing a function call (open('x').read())"),
        ("commands = (lambda: ['a'])()", "got a function call"),
        ("commands = ['a'] if True else []", "got a conditional expression"),
        ("timelimit = 60 * 60", "timelimit must be a number of seconds, got an expression (60 * 60)"),
        ("files = list(glob.glob('*.py'))", "files must be a list of strings (file names), got a function call"),
    ],
)
def test_non_literals_are_rejected_with_file_and_line(tmp_path: Path, line: str, expected: str) -> None:
    error = error_of(tmp_path, f"import os, sys\ncommands = ['ok']\n{line}\n")
    assert expected in str(error)
    assert str(error).startswith(f"{tmp_path / 'master.py'}:3: ")
    assert error.line == 3
    assert "read without running it" in str(error)


def test_line_of_the_culprit_inside_a_multiline_list(tmp_path: Path) -> None:
    error = error_of(tmp_path, """\
        commands = [
            'python a.py',
            'python b.py',
            shlex.join(['python', 'c.py']),
        ]
    """)
    assert error.line == 4
    assert "a list containing a function call (shlex.join(['python', 'c.py']))" in str(error)


@pytest.mark.parametrize(
    "text, line, expected",
    [
        ("commands = ['a']\nif True:\n    commands = ['b']\n", 3, "commands is assigned inside an if statement"),
        ("commands = ['a']\ncommands.append('b')\n", 2, "commands is changed by commands.append('b')"),
        ("commands = ['a']\ncommands += ['b']\n", 2, "commands is changed with an augmented assignment"),
        ("commands = ['a']\ncommands[0] = 'b'\n", 2, "commands is changed by commands[0] = ..."),
        ("commands = ['a']\ndel commands\n", 2, "commands is deleted with del"),
        ("commands = ['a']\nfrom os import sep as files\n", 2, "files is bound by an import"),
        ("commands = ['a']\nimport timelimit\n", 2, "timelimit is bound by an import"),
        ("commands = ['a']\ndef files(): pass\n", 2, "files is defined by a def or class statement"),
        ("commands = ['a']\nfor files in [1]: pass\n", 2, "files is assigned inside a for loop"),
        ("commands = ['a']\nwith open('x') as files: pass\n", 2, "files is assigned inside a with statement"),
        ("commands = ['a']\ntry:\n    pass\nexcept Exception as files:\n    pass\n", 4,
         "files is bound by an except clause"),
        ("commands = ['a']\nprint(timelimit := 5)\n", 2, "timelimit is assigned with :="),
        ("files, commands = ['a'], ['b']\n", 1, "files is assigned by unpacking"),
        ("commands = ['a']\nx = commands.pop()\n", 2, "commands is changed by commands.pop()"),
        ("commands = ['a']\ndef load():\n    global x, commands\n    commands = read()\n", 3,
         "commands is declared global in function load()"),
        ("commands = ['a']\nclass C:\n    def m(self):\n        global files\n", 4,
         "files is declared global in class C"),
    ],
)
def test_module_level_rebinding_is_rejected(tmp_path: Path, text: str, line: int, expected: str) -> None:
    error = error_of(tmp_path, text)
    assert error.line == line
    assert expected in str(error)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("commands = 'python job.py'\n",
         "got a str ('python job.py'); write commands = ['python job.py']"),
        ("commands = ['a', 3]\n", "but commands[1] is an int (3)"),
        ("commands = []\n", "commands is empty: there is nothing to run"),
        ("commands = ['a', '  ']\n", "commands[1] is an empty command"),
        ("commands = {'a': 1}\n", "got a dict ({'a': 1})"),
        ("commands = ['a']\nfiles = None\n", "files must be a list of strings (file names), got a NoneType"),
        ("commands = ['a']\nfiles = [b'x']\n", "files[0] is a bytes (b'x')"),
        ("commands = ['a']\ntimelimit = '60'\n", "timelimit must be a number of seconds, got a str ('60')"),
        ("commands = ['a']\ntimelimit = True\n", "timelimit must be a number of seconds, got a bool"),
        ("commands = ['a']\ntimelimit = 0\n", "timelimit must be a positive number of seconds, got 0"),
        ("commands = ['a']\ntimelimit = -5\n", "got -5"),
        ("commands = ['a']\ntimelimit = 1e999\n", "got inf"),
        ("commands = ['a']\ntimelimit = None\n", "got a NoneType"),
    ],
)
def test_wrong_types_and_values(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in str(error_of(tmp_path, text))


def test_missing_commands(tmp_path: Path) -> None:
    error = error_of(tmp_path, "files = ['a']\ntimelimit = 5\n")
    assert str(error) == (
        f"{tmp_path / 'master.py'}: defines no commands; expected a line like "
        "commands = ['python job.py']"
    )
    assert error.line == 0


def test_missing_file_and_undecodable_file(tmp_path: Path) -> None:
    with pytest.raises(LegacyMasterError, match="nope.py: cannot read: No such file"):
        read_master(tmp_path / "nope.py")
    path = tmp_path / "master.py"
    path.write_bytes(b"commands = ['\xff\xfe']\n")
    with pytest.raises(LegacyMasterError, match="cannot decode"):
        read_master(path)


def test_python2_master_with_a_python2_constant(tmp_path: Path) -> None:
    error = error_of(tmp_path, "print 'hi'\ncommands = ['a']\ntimelimit = 10L\n")
    assert error.line == 3
    assert "this is Python 2 syntax (timelimit = 10L): a long literal; drop the L" in str(error)
    assert "print" not in str(error)  # the rest of the file may stay Python 2


def test_python2_master_mutating_a_constant(tmp_path: Path) -> None:
    error = error_of(tmp_path, "print 'hi'\ncommands = ['a']\ncommands.append('b')\n")
    assert error.line == 3
    assert "commands is changed by commands.append('b')" in str(error)


def test_unparseable_master_without_constants(tmp_path: Path) -> None:
    error = error_of(tmp_path, "x = 1\nprint 'no constants here'\n")
    assert error.line == 2
    assert "this is Python 2 syntax" in str(error)
    assert "no top-level files/commands/timelimit assignment" in str(error)


def test_deeply_nested_literal_is_an_error_not_a_crash(tmp_path: Path) -> None:
    error = error_of(tmp_path, "commands = " + "[" * 5000 + "]" * 5000 + "\n")
    assert isinstance(error, LegacyMasterError)


def test_error_type_and_fields(tmp_path: Path) -> None:
    error = error_of(tmp_path, "commands = run()\n")
    assert isinstance(error, DistrCompError) and isinstance(error, ValueError)
    assert error.path == str(tmp_path / "master.py")
    assert error.line == 1
    assert error.reason.startswith("commands must be")


# ---------------------------------------------------------------------- never executed
HOSTILE = [
    "open({marker!r}, 'w').close()\ncommands = ['a']\n",
    "commands = [open({marker!r}, 'w').name]\n",
    "commands = [__import__('os').system('touch ' + {marker!r})]\n",
    "import os\nos.system('touch ' + {marker!r})\ncommands = ['a']\n",
    "commands = ['a']\ntimelimit = __import__('pathlib').Path({marker!r}).touch()\n",
    "commands = [f\"{{open({marker!r}, 'w').name}}\"]\n",
    "files = (lambda: open({marker!r}, 'w'))()\ncommands = ['a']\n",
    "commands = ['a']\nclass M:\n    open({marker!r}, 'w').close()\n",
    "commands = ['a']\nif __name__ == '__main__':\n    open({marker!r}, 'w').close()\n",
    "print 'py2'\nopen({marker!r}, 'w').close()\ncommands = ['a']\n",
    "print 'py2'\ncommands = [open({marker!r}, 'w').name]\n",
    "import atexit\natexit.register(lambda: open({marker!r}, 'w'))\ncommands = ['a']\n",
]


@pytest.mark.parametrize("template", HOSTILE)
def test_nothing_in_master_py_is_executed(tmp_path: Path, template: str) -> None:
    marker = tmp_path / "EXECUTED"
    path = write(tmp_path, template.format(marker=str(marker)))
    # Control: the same file, run by Python (minus its Python 2 line), does create a marker;
    # so the assertion at the end can fail.
    probe = tmp_path / "CONTROL"
    control = tmp_path / "control.py"
    text = path.read_text(encoding="utf-8")
    control.write_text(
        text.replace(str(marker), str(probe)).replace("print 'py2'\n", ""), encoding="utf-8"
    )
    subprocess.run([sys.executable, str(control)], cwd=tmp_path, timeout=60, check=False)
    assert probe.exists(), "the control run did not create its marker"

    try:
        read_master(path)
    except LegacyMasterError:
        pass
    assert not marker.exists()

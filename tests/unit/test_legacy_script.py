"""py2_problem (one message for a script that will not compile) and the compat directory."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from distrcomp.launcher.script import compat_dir, py2_problem, uses_legacy_message, with_compat_path

ROOT = Path(__file__).resolve().parents[2]


def script(tmp_path: Path, text: str, name: str = "old.py") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ py2_problem
PRINT_HINT = "convert the print statements, e.g. print(...)"


def migrate(path: Path) -> str:
    """How the message names ``distrcomp migrate`` for the script at ``path``."""
    return f"distrcomp migrate --write {path} converts the script"


@pytest.mark.parametrize(
    "text, line, shown",
    [
        ('import message as ms\nmyID = 1\nprint "My ID is", myID\n', 3, 'print "My ID is", myID'),
        ('print "a %d" % 3\n', 1, 'print "a %d" % 3'),
        ("print x\n", 1, "print x"),
        ('print\nprint "no newline",\n', 2, 'print "no newline",'),
        ('def f():\n    if 1:\n        print "deep"\n', 3, 'print "deep"'),
    ],
)
def test_print_statement(tmp_path: Path, text: str, line: int, shown: str) -> None:
    path = script(tmp_path, text)
    assert py2_problem(path) == (f"{path}:{line}: this is Python 2 syntax ({shown}); {PRINT_HINT}; "
                                 f"{migrate(path)}")


@pytest.mark.parametrize(
    "text, what, fix",
    [
        ("try:\n    pass\nexcept ValueError, e:\n    pass\n", "except X, e", "write except X as e"),
        ('raise ValueError, "bad"\n', "raise X, message", "write raise X(message)"),
        ("x = `1`\n", "backticks", "write repr(...)"),
        ("mode = 0777\n", "an octal literal", "write 0o777"),
        ("n = 10L\n", "a long literal", "drop the L"),
        ("ok = 1 <> 2\n", "the <> operator", "write !="),
        ('p = ur"\\d"\n', "a ur'' string", "drop the u"),
        ('exec "x = 1"\n', "an exec statement", "write exec(...)"),
        ("def f((a, b)):\n    pass\n", "tuple parameters", "unpack inside the body"),
    ],
)
def test_other_python2_syntax(tmp_path: Path, text: str, what: str, fix: str) -> None:
    message = py2_problem(script(tmp_path, text))
    assert message is not None
    assert "this is Python 2 syntax (" in message
    assert message.endswith(f": {what}; {fix}; {migrate(tmp_path / 'old.py')}")
    assert "also convert" not in message


def test_other_python2_syntax_with_print_statements_further_down(tmp_path: Path) -> None:
    path = script(tmp_path, "try:\n    pass\nexcept IOError, e:\n    print 'failed', e\n")
    assert py2_problem(path) == (
        f"{path}:3: this is Python 2 syntax (except IOError, e:): except X, e; write except X as e; "
        f"also convert the print statements, e.g. print(...); {migrate(path)}"
    )


@pytest.mark.parametrize(
    "text, line, msg",
    [
        ("x = (1,\n", 1, "'(' was never closed"),
        ("def f(:\n    pass\n", 1, "invalid syntax"),
        ('s = "`" +\n', 1, "invalid syntax"),  # a backtick in a string is no sign of Python 2
        ("if 1:\n        x = 1\n\ty = 2\n", 3, "inconsistent use of tabs and spaces in indentation"),
        ("x = 1\n  y = 2\n", 2, "unexpected indent"),
    ],
)
def test_other_syntax_errors(tmp_path: Path, text: str, line: int, msg: str) -> None:
    path = script(tmp_path, text)
    assert py2_problem(path) == f"{path}:{line}: syntax error: {msg}"


def test_null_bytes(tmp_path: Path) -> None:
    message = py2_problem(script(tmp_path, "x = 1\x00\n"))
    assert message is not None and "syntax error" in message and "null bytes" in message


@pytest.mark.parametrize(
    "text",
    [
        "print('hello')\n",
        "from __future__ import print_function\nprint('a', end='')\n",
        "import sys\nprint >>sys.stderr, 'x'\n",  # valid Python 3 syntax; fails only at run time
        "print = 3\nprint\n",
        "",
    ],
)
def test_python3_scripts_have_no_problem(tmp_path: Path, text: str) -> None:
    assert py2_problem(script(tmp_path, text)) is None


def test_script_is_compiled_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "RAN"
    path = script(tmp_path, f"open({str(marker)!r}, 'w').close()\n")
    assert py2_problem(path) is None
    assert not marker.exists()
    subprocess.run([sys.executable, str(path)], check=True, timeout=60)
    assert marker.exists()  # the control: running it does create the marker


def test_missing_script_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        py2_problem(tmp_path / "nope.py")


# ---------------------------------------------------------------------- uses_legacy_message
@pytest.mark.parametrize(
    "text, expected",
    [
        ("import message as ms\nms.setup_connection()\n", True),
        ("import os, message\n", True),
        ("from message import *\n", True),
        ("from message import send, recv\n", True),
        ("def main():\n    import message\n", True),
        ("try:\n    import message as ms\nexcept ImportError:\n    ms = None\n", True),
        ('import message as ms\nprint "py2", ms.node_id\n', True),  # Python 2: line search
        ('print "py2"\nfrom message import send\n', True),
        ('print "py2"\nimport os, message\n', True),
        ('print "py2"\nimport message_queue\n', False),
        ("import distrcomp as dc\n", False),
        ("import messages\nimport message_queue\n", False),
        ("from email import message\n", False),
        ("from . import message\n", False),
        ("x = 'import message'\n# import message\n", False),
        ('print "py2"\n', False),
        ("import \uff4dessage\n", True),  # a full-width m: Python reads the name as message
    ],
)
def test_uses_legacy_message(tmp_path: Path, text: str, expected: bool) -> None:
    assert uses_legacy_message(script(tmp_path, text)) is expected


def test_uses_legacy_message_on_the_examples() -> None:
    assert uses_legacy_message(ROOT / "examples" / "legacy_ring.py")
    assert not uses_legacy_message(ROOT / "examples" / "ring.py")


# ------------------------------------------------------------------------ compat directory
def test_compat_dir_holds_message_and_is_no_package() -> None:
    directory = Path(compat_dir())
    assert directory.is_absolute()
    assert (directory / "message.py").is_file()
    assert not (directory / "__init__.py").exists()
    package = Path(__import__("distrcomp").__file__).resolve().parent
    # installed: distrcomp/compat/; in a checkout (and an editable install of one): compat/ beside it
    assert directory in (package / "compat", package.parent / "compat")


def test_with_compat_path() -> None:
    assert with_compat_path({})["PYTHONPATH"] == compat_dir()
    assert with_compat_path({"PYTHONPATH": ""})["PYTHONPATH"] == compat_dir()
    env = {"PYTHONPATH": "/a" + os.pathsep + "/b", "HOME": "/h"}
    out = with_compat_path(env)
    assert out == {"PYTHONPATH": compat_dir() + os.pathsep + "/a" + os.pathsep + "/b", "HOME": "/h"}
    assert env["PYTHONPATH"] == "/a" + os.pathsep + "/b"  # the input is not changed


def clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_message_is_not_importable_without_the_compat_path(tmp_path: Path) -> None:
    # A top-level "message" module in site-packages would shadow other packages.
    done = subprocess.run(
        [sys.executable, "-c", "import message"], cwd=tmp_path, env=clean_env(),
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode != 0 and "No module named 'message'" in done.stderr


def test_importing_message_does_not_initialise_mpi(tmp_path: Path) -> None:
    code = (
        "import sys, message as ms\n"
        "assert 'mpi4py.MPI' not in sys.modules, 'MPI initialised at import'\n"
        "assert callable(ms.setup_connection) and callable(ms.recv)\n"
        "print(ms.__file__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=with_compat_path(clean_env()),
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(Path(compat_dir()) / "message.py")


def test_wheel_ships_compat_inside_the_package(tmp_path: Path) -> None:
    # What the wheel holds besides the compiled engine is the same either way: skip compiling it.
    env = {**os.environ, "DISTRCOMP_PURE_PYTHON": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300, check=False, env=env,
    )
    assert done.returncode == 0, f"building the wheel failed:\n{done.stdout}\n{done.stderr}"
    (wheel,) = tmp_path.glob("distrcomp-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "distrcomp/compat/message.py" in names
    assert "distrcomp/launcher/legacy.py" in names
    # one per-node wrapper: the Python module, no compiled program beside it
    assert "distrcomp/launcher/node.py" in names
    assert not [n for n in names if n.startswith("distrcomp/launcher/") and not n.endswith(".py")]
    top_level = [n for n in names if "/" not in n]
    assert top_level == [], f"top-level modules in the wheel: {top_level}"
    assert not [n for n in names if n.startswith("distrcomp/compat/") and n.endswith("__init__.py")]

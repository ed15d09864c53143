"""The legacy material's pure parts: distrcomp migrate's conversion and notes, the Python
options before a script, the old library's message.py recognised by content, and the old
master.py read with its name reference. The old library's files are the fixtures in
tests/launcher/old_distrcomp/ (Python 2, as their users have them)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from distrcomp.launcher.legacy import LegacyMaster, LegacyMasterError, read_master
from distrcomp.launcher.script import (
    compat_dir,
    is_old_message,
    python_script,
    shadowing_message,
)
from distrcomp.runscript import command as script_command

pytest.importorskip("fissix", reason="distrcomp migrate needs fissix (the legacy extra)")
from distrcomp.migrate import MigrateError, migrate

OLD = Path(__file__).resolve().parents[1] / "launcher" / "old_distrcomp"


# ------------------------------------------------------------------------ python options
@pytest.mark.parametrize(
    "words, index",
    [
        (["python", "-B", "job.py"], 2),
        (["python", "-u", "job.py", "-u"], 2),
        (["python3", "-O", "-X", "dev", "-W", "ignore", "job.py"], 6),
        (["python", "-OO", "-Xdev", "-Wignore::DeprecationWarning", "job.py"], 4),
        (["python", "-uB", "job.py"], 2),
        (["/usr/bin/python3.11", "--check-hash-based-pycs", "never", "job.py"], 3),
        (["python", "--", "job.py"], 2),
        (["python", "job"], 1),
        (["job.py", "-B"], 0),
        (["python", "-c", "print(1)", "job.py"], None),
        (["python", "-m", "job"], None),
        (["python", "-", "job.py"], None),
        (["python", "-B"], None),
        (["python-config", "job.py"], None),
        (["sh", "job.py"], None),
    ],
)
def test_python_script_skips_the_interpreters_options(words, index):
    assert python_script(words) == index


def test_the_script_runner_keeps_the_interpreter_and_its_options():
    command = script_command(["python", "-B", "-X", "dev", "job.py", "a"], 4, dropin=True)
    assert command[:3] == ["python", "-B", "-X"] and command[3:5] == ["dev", "-c"]
    assert command[6:] == ["job.py", "a"]


# ------------------------------------------------------------------- the old message.py
def test_the_old_message_module_is_recognised_by_its_content(tmp_path):
    assert is_old_message(OLD / "message.py")
    renamed = tmp_path / "transport.py"
    shutil.copy(OLD / "message.py", renamed)
    assert is_old_message(renamed)  # the content, not the name
    assert not is_old_message(Path(compat_dir()) / "message.py")  # the drop-in
    own = tmp_path / "message.py"
    own.write_text("def send(to, text):\n    print(to, text)\n\ndef recv(frm):\n    return ''\n")
    assert not is_old_message(own)  # a user's own module of that name
    assert not is_old_message(tmp_path / "missing.py")


def test_shadowing_message_beside_the_script_or_among_the_files(tmp_path):
    (tmp_path / "job.py").write_text("import message\n")
    assert shadowing_message(tmp_path / "job.py") is None
    shutil.copy(OLD / "message.py", tmp_path / "message.py")
    assert shadowing_message(tmp_path / "job.py") == str(tmp_path / "message.py")
    elsewhere = tmp_path / "lib"
    elsewhere.mkdir()
    (elsewhere / "job.py").write_text("import message\n")
    assert shadowing_message(elsewhere / "job.py") is None
    files = [str(tmp_path / "message.py")]
    assert shadowing_message(elsewhere / "job.py", files) == files[0]


# ----------------------------------------------------------------------- the old master
OLD_MASTER = LegacyMaster(files=["myprogram.py", "message.py"],
                          commands=["python -B myprogram.py"], timelimit=120.0)


def test_the_old_master_py_is_read_with_its_name_reference():
    """The fixture is Python 2 (print statements) and names its script through a variable."""
    assert read_master(OLD / "master.py") == OLD_MASTER


def test_the_old_master_py_in_python_3_is_read_alike(tmp_path):
    text = (OLD / "master.py").read_text()
    text = text.replace('print "--------(Node localhost     return)--------\\n%s" % msg',
                        'print("--------(Node localhost     return)--------\\n%s" % msg)')
    text = text.replace('print "Total time : %s." % "{0:.3f}".format(clock()-s)',
                        'print("Total time : %s." % "{0:.3f}".format(clock()-s))')
    (tmp_path / "master.py").write_text(text)
    compile(text, "master.py", "exec")
    assert read_master(tmp_path / "master.py") == OLD_MASTER


@pytest.mark.parametrize(
    "binding, line",
    [
        ('my_source_code = "other.py"\n', 3),  # assigned twice: which one the tool used is unknown
        ("for my_source_code in ['a.py']:\n    pass\n", 3),
        ("def f():\n    global my_source_code\n", 3),
        ("import my_source_code\n", 3),
    ],
)
def test_a_name_bound_more_than_once_is_refused_with_its_line(tmp_path, binding, line):
    path = tmp_path / "master.py"
    path.write_text('my_source_code = "job.py"\ncommands = ["python -B job.py"]\n'
                    f"files = [my_source_code]\n{binding}")
    with pytest.raises(LegacyMasterError) as caught:
        read_master(path)
    assert str(caught.value).startswith(f"{path}:{line}: files must be a list of strings"), caught.value
    assert "(my_source_code)" in str(caught.value)


def test_a_name_bound_to_anything_but_a_literal_is_refused(tmp_path):
    path = tmp_path / "master.py"
    path.write_text('import os\nscript = os.environ["JOB"]\ncommands = ["python " + script]\n')
    with pytest.raises(LegacyMasterError, match=r"master.py:3: commands must be a list of strings"):
        read_master(path)


# ---------------------------------------------------------------------------- migrate
def test_migrate_converts_the_old_ring_and_keeps_import_message(tmp_path):
    # the old layout, in a directory that is also a package: lib2to3's own "import" fixer
    # would make that `from . import message as ms`
    for name in ("myprogram.py", "message.py"):
        shutil.copy(OLD / name, tmp_path / name)
    (tmp_path / "__init__.py").write_text("")
    path = tmp_path / "myprogram.py"
    result = migrate(path.read_text(), str(path))
    assert result.changed
    assert "import message as ms\n" in result.source
    assert 'print("My ID is", myID)\n' in result.source and "print(msg)\n" in result.source
    assert result.notes == []
    compile(result.source, str(path), "exec")


def test_migrate_lists_what_it_cannot_decide_with_lines():
    result = migrate((OLD / "test.py").read_text(), "test.py")
    assert "import pickle\n" in result.source and "for k in range(ms.n_node - 1) :" in result.source
    lines = result.source.splitlines()
    assert [(line, lines[line - 1].strip()[:20]) for line, _ in result.notes] == [
        (11, "share = pickle.loads"), (14, 'print("Mean share :"'),
    ]
    assert "/ is true division" in result.notes[1][1]


@pytest.mark.parametrize(
    "text, says",
    [
        ("name = raw_input('who? ')\n", "only node 0"),
        ("n = input('how many? ')\n", "was Python 2's input()"),
        ("import socket\ns = socket.socket()\ns.send('hello')\n", "socket data is bytes"),
        ("import struct\nx = struct.pack('i', 1)\n", "struct works on bytes"),
        ("half = 7 / 2\n", "/ is true division"),
    ],
)
def test_migrate_notes(text, says):
    notes = migrate(text, "old.py").notes
    assert len(notes) == 1 and says in notes[0][1], notes


def test_message_calls_are_not_socket_calls():
    text = "import socket\nimport message as ms\nms.send(1, 'x')\nprint ms.recv(1)\n"
    assert migrate(text, "old.py").notes == []


def test_a_python_3_script_comes_back_unchanged():
    text = "import message as ms\nprint(ms.node_id)\n"
    result = migrate(text, "new.py")
    assert not result.changed and result.source == text


def test_migrate_refuses_what_is_neither_python_2_nor_3():
    with pytest.raises(MigrateError, match=r"^bad.py:2: cannot be parsed"):
        migrate("x = 1\ny = = 2\n", "bad.py")


def test_a_script_python_3_compiles_keeps_its_print_calls_and_loses_cpickle():
    text = "import cPickle\nprint(cPickle.dumps(1))\n"
    result = migrate(text, "mixed.py")
    assert result.source == "import pickle\nprint(pickle.dumps(1))\n"


def test_migrate_write_keeps_the_original_even_when_a_file_is_named_twice(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "myprogram.py"
    shutil.copy(OLD / "myprogram.py", path)
    done = subprocess.run([sys.executable, "-m", "distrcomp", "migrate", "--write", "myprogram.py",
                           "./myprogram.py"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "myprogram.py.orig").read_text() == (OLD / "myprogram.py").read_text()
    assert 'print("My ID is", myID)' in path.read_text()
    again = subprocess.run([sys.executable, "-m", "distrcomp", "migrate", "--write", "myprogram.py"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0 and again.stderr == "myprogram.py: nothing to convert\n", again


def test_division_is_not_listed_where_python_2_already_had_true_division():
    text = "from __future__ import division, print_function\nhalf = 7 / 2\nprint(half)\n"
    result = migrate(text, "old.py")
    assert result.notes == [] and "half = 7 / 2" in result.source

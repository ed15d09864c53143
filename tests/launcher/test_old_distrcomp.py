"""The old DistrComp library's own material, as its users have it, under distrcomp: Python 2
scripts converted by ``distrcomp migrate``, the old ``message.py`` beside them, the unmodified
old ``master.py`` run by ``--legacy-master`` (real launcher, real mpiexec). The material is
in tests/launcher/old_distrcomp/."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest
from jobtools import launch

pytest.importorskip("fissix", reason="distrcomp migrate needs fissix (the legacy extra)")

OLD = Path(__file__).resolve().parent / "old_distrcomp"
HEADER = "--------(Node localhost returns)--------\n"
DROPIN = ("distrcomp: message.py is the old DistrComp library's message module; myprogram.py "
          "runs with distrcomp's drop-in message module instead")
TIMEOUT = 300  # generous: 4 ranks share 2 loaded cores; a hang still ends the test


def old_directory(tmp_path: Path, slots: int) -> Path:
    """A directory laid out as the old README says, with a peers file of this machine's slots."""
    for name in ("myprogram.py", "test.py", "message.py", "master.py"):
        shutil.copy(OLD / name, tmp_path / name)
    (tmp_path / "peers.txt").write_text(f"localhost slots={slots}\n")
    return tmp_path


def blocks(stdout: str) -> list[str]:
    """The blocks of the old master's output, sorted (they come as the nodes finish), each
    without its header. Fails unless stdout is just blocks then ``Total time : 1.523.``."""
    pattern = rf"({re.escape(HEADER)}(.*\n)*?\n)+Total time : \d+\.\d{{3}}\.\n"
    assert re.fullmatch(pattern, stdout), stdout
    return sorted(stdout.rsplit("Total time", 1)[0].split(HEADER)[1:])


def ring(n: int) -> list[str]:
    return sorted(f"My ID is {k}\nNext to {(k - 1) % n} is {k}\n" for k in range(n))


def without_python_on_path() -> dict[str, str]:
    """An environment whose PATH has no ``python`` (no activated venv), as the issue met it."""
    path = "/usr/bin:/bin"
    assert not any(os.path.exists(os.path.join(d, "python")) for d in path.split(":"))
    return {"PATH": path}


def test_migrate_then_the_unmodified_old_master_prints_as_the_old_master_did(tmp_path):
    """The issue's "Done when": distrcomp migrate --write myprogram.py, then
    distrcomp run --legacy-master master.py, in the old layout (message.py in `files`)."""
    old = old_directory(tmp_path, 4)
    done = launch(old, "migrate", "--write", "myprogram.py")
    assert done.returncode == 0, done
    assert (old / "myprogram.py.orig").read_text() == (OLD / "myprogram.py").read_text()
    assert (old / "message.py").read_text() == (OLD / "message.py").read_text()
    done = launch(old, "run", "--legacy-master", "master.py", env=without_python_on_path(),
                  timeout=TIMEOUT)
    assert done.returncode == 0, done
    assert blocks(done.stdout) == [text + "\n" for text in ring(4)], done
    assert DROPIN in done.stderr.splitlines(), done
    assert "Total time" not in done.stderr and "Traceback" not in done.stderr, done


BROKEN = """\
import os, sys, time
rank = int(os.environ.get("PMI_RANK") or os.environ["OMPI_COMM_WORLD_RANK"])
if rank == 1:
    print("fine")
    sys.stdout.flush()
    open("node-1-done", "w").close()
    sys.exit(0)
while not os.path.exists("node-1-done"):
    time.sleep(0.05)
print("before")
sys.stdout.flush()
raise ValueError("broken on purpose")
"""


def test_every_command_runs_after_one_fails_with_its_stderr_inside_the_block(tmp_path):
    old = old_directory(tmp_path, 2)
    # node 0 fails once node 1 is done (the first failure stops the nodes still running)
    (old / "broken.py").write_text(BROKEN)
    text = (old / "master.py").read_text()
    text = text.replace('files = [my_source_code, "message.py"]',
                        'files = [my_source_code, "message.py", "test.py", "broken.py"]')
    text = text.replace('commands = ["python -B myprogram.py"]',
                        'commands = ["python -B broken.py", "python -B myprogram.py", '
                        '"python -u test.py"]')
    (old / "master.py").write_text(text)
    done = launch(old, "migrate", "--write", "myprogram.py", "test.py")
    assert done.returncode == 0, done
    assert "test.py:14: check: " in done.stderr  # the `/` it cannot decide
    done = launch(old, "run", "--legacy-master", "master.py", timeout=TIMEOUT)
    assert done.returncode == 1, done  # the first command failed
    found = blocks(done.stdout)
    assert len(found) == 2, done
    # each node's block: the failing command's stdout (and node 0's traceback), then the
    # ring's lines, then (node 0) test.py's
    zero, one = sorted(found, key=lambda b: b.split("My ID is ")[1])
    lines = zero.splitlines(keepends=True)
    assert lines[0] == "before\n" and "Traceback (most recent call last):\n" in lines, done
    assert lines[lines.index("ValueError: broken on purpose\n") + 1:] == [
        "My ID is 0\n", "Next to 1 is 0\n", "Sum of 1 shares : 10\n", "Mean share : 10.0\n", "\n",
    ], done
    assert one == "fine\nMy ID is 1\nNext to 0 is 1\n\n", done
    assert "command 3 of 3: python -u test.py" in done.stderr, done


@pytest.mark.parametrize("options", [["-B"], ["-u"], ["-O", "-X", "dev", "-W", "ignore"]])
def test_python_options_before_the_script_keep_the_legacy_handling(tmp_path, options):
    """`distrcomp run -- python -B myprogram.py`, the old commands' form, beside the old
    message.py: the drop-in is used; unconverted, the one-line refusal comes first."""
    old = old_directory(tmp_path, 2)
    done = launch(old, "run", "-n", "2", "--", sys.executable, *options, "myprogram.py")
    assert done.returncode == 2, done
    assert done.stderr.startswith("distrcomp: myprogram.py:14: this is Python 2 syntax"), done
    assert "distrcomp migrate --write myprogram.py converts the script" in done.stderr, done
    assert done.stdout == "", done
    assert launch(old, "migrate", "--write", "myprogram.py").returncode == 0
    done = launch(old, "run", "-n", "2", "--", sys.executable, *options, "myprogram.py",
                  timeout=TIMEOUT)
    assert done.returncode == 0, done
    for k in range(2):
        assert f"[node {k} · localhost] Next to {(k - 1) % 2} is {k}" in done.stdout, done
    assert DROPIN in done.stderr.splitlines(), done


def test_the_old_message_module_beside_a_plain_run_gives_way_to_the_drop_in(tmp_path):
    old = old_directory(tmp_path, 3)
    assert launch(old, "migrate", "--write", "test.py").returncode == 0
    done = launch(old, "run", "-n", "3", "test.py", timeout=TIMEOUT)
    assert done.returncode == 0, done
    assert "[node 0 · localhost] Sum of 2 shares : 30" in done.stdout, done
    assert ("distrcomp: message.py is the old DistrComp library's message module; test.py runs "
            "with distrcomp's drop-in message module instead") in done.stderr, done


def test_a_message_module_of_the_users_own_is_left_alone(tmp_path):
    (tmp_path / "message.py").write_text("def hello():\n    return 'my own message module'\n")
    (tmp_path / "job.py").write_text("import message\nprint(message.hello())\n")
    done = launch(tmp_path, "run", "-n", "2", "--", sys.executable, "-B", "job.py",
                  timeout=TIMEOUT)
    assert done.returncode == 0, done
    assert done.stdout.count("my own message module") == 2, done
    assert "drop-in" not in done.stderr, done


def test_the_old_message_module_shipped_by_files_gives_way_to_the_drop_in(tmp_path):
    """--files puts the old message.py (kept elsewhere) beside the script on the nodes."""
    old = old_directory(tmp_path, 2)
    assert launch(old, "migrate", "--write", "myprogram.py").returncode == 0
    (old / "lib").mkdir()
    (old / "message.py").rename(old / "lib" / "message.py")
    done = launch(old, "run", "--files", "myprogram.py,lib/message.py", "--",
                  sys.executable, "-B", "myprogram.py", timeout=TIMEOUT)
    assert done.returncode == 0, done
    assert "[node 1 · localhost] Next to 0 is 1" in done.stdout, done
    assert ("distrcomp: lib/message.py is the old DistrComp library's message module; "
            "myprogram.py runs with distrcomp's drop-in message module instead") in done.stderr

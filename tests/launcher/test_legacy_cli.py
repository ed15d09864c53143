"""The legacy side of the CLI: compat-path, legacy scripts under `distrcomp run`, Python 2
scripts refused before launch, and --legacy-master (real launcher, real mpiexec)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from jobtools import ROOT, launch

EXAMPLES = ROOT / "examples"


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_compat_path_prints_the_directory_holding_message_py(tmp_path):
    done = launch(tmp_path, "compat-path")
    assert done.returncode == 0, done
    directory = Path(done.stdout.strip())
    assert (directory / "message.py").is_file()
    # the documented one-liner for plain mpiexec works
    env = {**os.environ, "PYTHONPATH": str(directory)}
    check = subprocess.run([sys.executable, "-c", "import message; print(message.__file__)"],
                           env=env, capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == 0 and check.stdout.startswith(str(directory)), check.stderr


def test_legacy_script_runs_unchanged_under_distrcomp_run(tmp_path):
    done = launch(tmp_path, "run", "-n", "4", str(EXAMPLES / "legacy_ring.py"))
    assert done.returncode == 0, done
    for node in range(4):
        before = (node - 1) % 4
        assert f"[node {node} · localhost] Next to {before} is {node}" in done.stdout, done


def test_compat_dir_is_not_put_on_the_path_of_other_scripts(tmp_path):
    """Only scripts that import `message` get the drop-in on their path, so that no other
    program's own module named `message` is ever shadowed."""
    write(tmp_path / "prog.py", "import sys\nprint(any(p.endswith('distrcomp/compat') for p in sys.path))\n")
    done = launch(tmp_path, "run", "-n", "1", "prog.py")
    assert done.returncode == 0, done
    assert done.stdout.strip().endswith("False")


def test_python2_script_is_refused_with_one_message_before_any_node_starts(tmp_path):
    marker = tmp_path / "started"
    write(tmp_path / "old.py", f"""\
        open({str(marker)!r}, "w").close()
        myID = 1
        print "My ID is", myID
    """)
    done = launch(tmp_path, "run", "-n", "4", "old.py")
    assert done.returncode == 2, done
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [
        (
            'distrcomp: old.py:3: this is Python 2 syntax (print "My ID is", myID); '
            "convert the print statements, e.g. print(...); "
            "distrcomp migrate --write old.py converts the script"
        )
    ], done
    assert not marker.exists()
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_python2_script_behind_the_interpreter_is_refused_too(tmp_path):
    write(tmp_path / "old.py", "print 'hi'\n")
    done = launch(tmp_path, "run", "-n", "2", "--", sys.executable, "old.py")
    assert done.returncode == 2 and "old.py:1: this is Python 2 syntax" in done.stderr, done


MASTER = """\
    # the old DistrComp master.py
    import socket
    files = ["job.py"]
    commands = ["echo first on node", "python job.py"]
    timelimit = 60

    def main():
        pass  # the old tool's own code is ignored
"""

JOB = """\
    import message as ms
    ms.setup_connection()
    ms.send((ms.node_id + 1) % ms.n_node, ms.node_id)
    print("node", ms.node_id, "got", ms.recv((ms.node_id - 1) % ms.n_node))
    ms.close_connection()
"""


def blocks(stdout: str) -> list[str]:
    """The old master's blocks in ``stdout`` (each without its header), sorted: they come in
    the order the nodes finish. Fails unless stdout is blocks then ``Total time : 1.234.``."""
    header = "--------(Node localhost returns)--------\n"
    assert re.fullmatch(rf"({re.escape(header)}(.*\n)*?\n)*Total time : \d+\.\d{{3}}\.\n",
                        stdout), stdout
    return sorted(stdout.rsplit("Total time", 1)[0].split(header)[1:])


def test_legacy_master_runs_its_commands_in_order_one_block_per_node(tmp_path):
    """As the old master printed: one block per node holding all its commands' output, then the
    total time, on stdout."""
    write(tmp_path / "master.py", MASTER)
    write(tmp_path / "job.py", JOB)
    done = launch(tmp_path, "run", "-n", "3", "--legacy-master", "master.py")
    assert done.returncode == 0, done
    assert blocks(done.stdout) == sorted(
        f"first on node\nnode {node} got {(node - 1) % 3}\n\n" for node in range(3)
    ), done
    assert "Total time" not in done.stderr
    assert "command 1 of 2: echo first on node" in done.stderr


def test_legacy_master_timelimit_stops_the_command_and_the_next_one_runs(tmp_path):
    write(tmp_path / "master.py", """\
        commands = ["sleep 60", "echo next"]
        timelimit = 1.5
    """)
    done = launch(tmp_path, "run", "-n", "2", "--legacy-master", "master.py", timeout=60)
    assert done.returncode == 124, done
    assert blocks(done.stdout) == ["next\n\n", "next\n\n"], done
    assert done.elapsed < 40


def test_legacy_master_is_never_executed_and_non_literals_are_refused(tmp_path):
    marker = tmp_path / "executed"
    write(tmp_path / "master.py", f"""\
        open({str(marker)!r}, "w").close()
        commands = [open({str(marker)!r}).read()]
    """)
    done = launch(tmp_path, "run", "-n", "2", "--legacy-master", "master.py")
    assert done.returncode == 2, done
    assert done.stderr.startswith("distrcomp: master.py:2: commands must be a list of strings")
    assert not marker.exists()


def test_legacy_master_with_missing_files_is_refused(tmp_path):
    write(tmp_path / "master.py", 'files = ["data.bin"]\ncommands = ["true"]\n')
    done = launch(tmp_path, "run", "-n", "2", "--legacy-master", "master.py")
    assert done.returncode == 2 and "data.bin: no such file" in done.stderr, done


def test_legacy_master_and_a_command_together_are_refused(tmp_path):
    write(tmp_path / "master.py", 'commands = ["true"]\n')
    done = launch(tmp_path, "run", "--legacy-master", "master.py", "--", "true")
    assert done.returncode == 2 and "either --legacy-master or a COMMAND" in done.stderr, done


def test_legacy_master_ships_its_files_and_runs_the_commands_there(tmp_path):
    write(tmp_path / "master.py", """\
        files = ["job.py", "data.txt"]
        commands = ["python job.py"]
        timelimit = 60
    """)
    write(tmp_path / "job.py", """\
        import os
        print(os.getcwd() != os.environ.get("LAUNCH_DIR"), sorted(os.listdir(".")),
              open("data.txt").read().strip())
    """)
    (tmp_path / "data.txt").write_text("payload\n")
    (tmp_path / "not_listed.txt").write_text("stays here\n")
    done = launch(tmp_path, "run", "-n", "2", "-x", f"LAUNCH_DIR={tmp_path}",
                  "--legacy-master", "master.py")
    assert done.returncode == 0, done
    assert blocks(done.stdout) == ["True ['data.txt', 'job.py'] payload\n\n"] * 2, done


def test_legacy_master_without_tags_prints_raw_lines_then_the_total_time(tmp_path):
    write(tmp_path / "master.py", 'commands = ["echo raw"]\n')
    done = launch(tmp_path, "run", "-n", "2", "--no-tag", "--legacy-master", "master.py")
    assert done.returncode == 0, done
    assert re.fullmatch(r"raw\nraw\nTotal time : \d+\.\d{3}\.\n", done.stdout), done

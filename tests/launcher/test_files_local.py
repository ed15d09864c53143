"""``--files`` on this machine only: a local per-job directory, removed afterwards."""

from __future__ import annotations

import os

from jobtools import launch, tagged_lines

LISTING = "import os; print(os.getcwd(), sorted(os.listdir('.')), oct(os.stat('..').st_mode & 0o777))"


def test_local_nodes_run_in_a_fresh_directory_with_the_shipped_files(tmp_path):
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b.txt").write_text("b")
    (tmp_path / "left-out.txt").write_text("x")
    done = launch(tmp_path, "run", "-n", "2", "--files", "a.txt,d", "--", "python", "-c", LISTING)
    assert done.returncode == 0, done
    seen = {node: text.split(" ", 1) for node, _, text in tagged_lines(done.stdout)}
    cwd = seen[0][0]
    assert seen[0] == seen[1] == [cwd, "['a.txt', 'd'] 0o700"], done
    assert cwd.startswith("/tmp/distrcomp-") and cwd.endswith("/0")
    assert not os.path.exists(os.path.dirname(cwd))


def test_keep_files_without_files_is_a_usage_error(tmp_path):
    done = launch(tmp_path, "run", "--keep-files", "--", "true")
    assert done.returncode == 2
    assert "--keep-files needs --files" in done.stderr

"""Every example runs as documented: `distrcomp run -n 4 examples/X.py` (real launcher)."""

from __future__ import annotations

import pytest
from jobtools import ROOT, launch, tagged_lines

EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_runs_on_four_nodes_through_the_launcher(tmp_path, example):
    done = launch(tmp_path, "run", "-n", "4", str(example))
    assert done.returncode == 0, done
    nodes = {node for node, _, _ in tagged_lines(done.stdout)}
    assert nodes, done  # every example prints something
    assert nodes <= {0, 1, 2, 3}

"""``benchmarks/run.py --quick`` runs end to end and produces the whole table.

A smoke test only: it never looks at speed, since CI machines are shared and noisy. It checks
that every row is present in the printed table and the JSON, and that every measured ratio is
a finite number (the launcher rows may say "n/a" where ``distrcomp run`` is not available).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

from conftest import ROOT

ROW_KEYS = [
    "latency_array8", "latency_dict", "latency_array8_stats", "latency_array8_pure", "latency_dict_pure",
    "bandwidth_1MiB_vs_Send", "bandwidth_1MiB_vs_send",
    "bandwidth_16MiB_vs_Send", "bandwidth_16MiB_vs_send",
    "bandwidth_128MiB_vs_Send", "bandwidth_128MiB_vs_send",
    "dict_4x16MiB", "allreduce_n2", "allreduce_n4", "ring_64MiB_n4",
    "launcher_ring", "launcher_ring_n32", "launcher_relay", "launcher_relay_u",
    "peak_rss_recv_128MiB",
]


def test_quick_benchmark_run_prints_and_saves_every_row(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=900, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads(out.read_text())
    rows = {row["key"]: row for row in record["rows"]}
    assert list(rows) == ROW_KEYS
    for key, row in rows.items():
        assert row["label"] in done.stdout, key
        if key.startswith("launcher") and record["launcher_unavailable"]:
            assert row["value"] is None and "n/a" in row["note"]
            continue
        assert row["value"] is not None and math.isfinite(row["value"]), (key, row)
        assert row["met"] in (True, False)
    assert record["table"] in done.stdout

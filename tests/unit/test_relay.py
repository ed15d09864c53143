"""Line assembly, tagging, grouping and log files of the output relay (no MPI, no processes)."""

from __future__ import annotations

import os
import pty
import select
import tty

import pytest

from distrcomp.launcher import relay
from distrcomp.launcher.relay import LineBuffer, Output, Sink, tag


def test_line_buffer_hands_out_whole_lines_only():
    buffer = LineBuffer()
    assert buffer.feed(b"n0") == b""
    assert buffer.feed(b" 1 ") == b""
    assert buffer.feed(b"x\nn0 2") == b"n0 1 x\n"
    assert buffer.feed(b"\n\nn0 3\nn0") == b"n0 2\n\nn0 3\n"
    assert buffer.finish() == b"n0"
    assert buffer.finish() == b""


def test_line_buffer_forwards_overlong_line_in_pieces(monkeypatch):
    monkeypatch.setattr(relay, "MAX_LINE", 8)
    buffer = LineBuffer()
    assert buffer.feed(b"12345") == b""
    assert buffer.feed(b"6789") == b"123456789"  # no newline: a piece of a long line
    assert buffer.feed(b"ab\n") == b"ab\n"


def test_tag_format():
    assert tag(2, "10.0.0.3") == "[node 2 \u00b7 10.0.0.3] "


def _pipe_output(**options):
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    output = Output(["h0", "h1"], Sink(out_w), Sink(err_w), **options)

    def read() -> tuple[str, str]:
        output.close()
        os.close(out_w)
        os.close(err_w)
        with os.fdopen(out_r, "rb") as out, os.fdopen(err_r, "rb") as err:
            return out.read().decode(), err.read().decode()

    return output, read


def test_tagged_lines_and_final_line_completed():
    output, read = _pipe_output()
    output.lines(0, "out", b"a\nb\n")
    output.lines(1, "err", b"oops\n")
    output.lines(1, "out", b"last")
    output.launcher_lines("[mpiexec] ", b"note\n")
    out, err = read()
    assert out == "[node 0 \u00b7 h0] a\n[node 0 \u00b7 h0] b\n[node 1 \u00b7 h1] last\n"
    assert err == "[node 1 \u00b7 h1] oops\n[mpiexec] note\n"


def test_raw_passthrough_keeps_bytes():
    output, read = _pipe_output(tagged=False)
    output.lines(0, "out", b"a\n")
    output.lines(1, "out", b"no newline")
    assert read()[0] == "a\nno newline"


def test_grouped_blocks_in_node_order_even_if_node_1_ends_first():
    output, read = _pipe_output(grouped=True)
    output.lines(1, "out", b"one\n")
    output.finished(1)  # node 0 still running: nothing shown yet
    output.lines(0, "out", b"zero\n")
    output.lines(0, "err", b"zero err\n")
    output.lines(0, "out", b"zero again\n")
    output.finished(0)
    out, err = read()
    # the old DistrComp master's layout: header, the node's output, a blank line; its stderr
    # inside its block, in the order written (it came after the block once)
    assert out == ("--------(Node 0 h0 return)--------\nzero\nzero err\nzero again\n\n"
                   "--------(Node 1 h1 return)--------\none\n\n")
    assert err == ""


def test_escape_controls_leaves_tab_newline_and_text():
    assert relay.escape_controls(b"a\tb \xc3\xa9\n") == b"a\tb \xc3\xa9\n"
    assert relay.escape_controls(b"\r[x]\x1b[2K\x00\x7f\xc2\x9b1m\n") == \
        b"\\r[x]\\x1b[2K\\x00\\x7f\\u009b1m\n"


def _read_all(controller: int) -> bytes:
    """What is waiting on a terminal's controlling side (everything was written already)."""
    shown = b""
    while select.select([controller], [], [], 0.5)[0]:
        shown += os.read(controller, 1 << 16)
    return shown


@pytest.mark.parametrize("grouped", [False, True])
def test_on_a_terminal_a_node_cannot_forge_a_tag(grouped):
    controller, terminal = pty.openpty()
    tty.setraw(terminal)  # no newline translation: the bytes as the launcher wrote them
    try:
        output = Output(["h0", "h1"], Sink(terminal), Sink(terminal), grouped=grouped)
        output.lines(0, "out", b"\r[node 1 \xc2\xb7 h1] forged\x1b[2K\n")
        output.lines(0, "err", b"\x1b]0;title\x07\n")
        output.finished(0)
        output.finished(1)
        output.close()
        shown = _read_all(controller)
    finally:
        os.close(terminal)
        os.close(controller)
    assert b"\r" not in shown and b"\x1b" not in shown and b"\x07" not in shown, shown
    prefix = b"" if grouped else tag(0, "h0").encode()
    assert prefix + b"\\r[node 1 \xc2\xb7 h1] forged\\x1b[2K\n" in shown, shown
    assert prefix + b"\\x1b]0;title\\x07\n" in shown, shown


def test_raw_output_on_a_terminal_keeps_bytes():
    controller, terminal = pty.openpty()
    tty.setraw(terminal)
    try:
        output = Output(["h0"], Sink(terminal), Sink(terminal), tagged=False)
        output.lines(0, "out", b"\rprogress\x1b[2K\n")
        output.close()
        assert _read_all(controller) == b"\rprogress\x1b[2K\n"
    finally:
        os.close(terminal)
        os.close(controller)


def test_output_dir_files_and_stderr_tail(tmp_path):
    output, read = _pipe_output(directory=tmp_path / "logs")
    output.lines(0, "out", b"x\n")
    output.lines(0, "err", b"e1\n\ne2\ne3\ne4\n")
    output.lines(0, "out", b"end")
    assert output.last_stderr(0) == ["e2", "e3", "e4"]
    read()
    assert (tmp_path / "logs" / "node-0.out").read_bytes() == b"x\nend"
    assert (tmp_path / "logs" / "node-0.err").read_bytes() == b"e1\n\ne2\ne3\ne4\n"
    assert (tmp_path / "logs" / "node-1.out").read_bytes() == b""

"""Blocks: the old DistrComp master's output (one block per node over all its commands, as the
node finishes), driven with plain values and a real file as stdout."""

from __future__ import annotations

from distrcomp.launcher.blocks import Blocks, header
from distrcomp.launcher.relay import Output, Sink


def test_a_node_s_block_is_printed_when_it_finished_its_last_command(tmp_path):
    path = tmp_path / "stdout"
    with open(path, "wb") as out:
        blocks = Blocks(["10.0.0.2", "10.0.0.3"], commands=2, stdout=Sink(out.fileno()))
        blocks.lines(1, b"one, first command\n")
        blocks.lines(0, b"zero, first command\n")
        blocks.finished(0)
        blocks.finished(1)
        assert path.read_bytes() == b""  # a second command is to come
        blocks.lines(1, b"one, second\nno newline")
        blocks.finished(1)
        assert path.read_bytes() == (header("10.0.0.3")
                                     + b"one, first command\none, second\nno newline\n\n")
        blocks.lines(0, b"zero, second\n")
        blocks.finished(0)
        blocks.close()
    assert path.read_bytes() == (
        b"--------(Node 10.0.0.3 returns)--------\none, first command\none, second\nno newline\n\n"
        b"--------(Node 10.0.0.2 returns)--------\nzero, first command\nzero, second\n\n"
    )


def test_close_prints_the_nodes_never_seen_to_finish_in_node_order(tmp_path):
    path = tmp_path / "stdout"
    with open(path, "wb") as out:
        blocks = Blocks(["a", "b", "c"], commands=1, stdout=Sink(out.fileno()))
        blocks.lines(2, b"two\n")
        blocks.finished(1)
        blocks.close()
    assert path.read_bytes() == (
        b"--------(Node b returns)--------\n\n"
        b"--------(Node a returns)--------\n\n"
        b"--------(Node c returns)--------\ntwo\n\n"
    )


def test_output_hands_both_streams_to_the_blocks_once_per_finished_node(tmp_path):
    """stderr lines go into the node's block on stdout; a node reported finished twice by a
    job (its exit, then its streams' end) counts once."""
    out_path, err_path = tmp_path / "out", tmp_path / "err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        blocks = Blocks(["h"], commands=2, stdout=Sink(out.fileno()))
        for command in range(2):
            output = Output(["h"], Sink(out.fileno()), Sink(err.fileno()), blocks=blocks)
            output.lines(0, "out", f"out {command}\n".encode())
            output.lines(0, "err", f"err {command}\n".encode())
            output.finished(0)
            output.finished(0)
            assert (out_path.read_bytes() == b"") == (command == 0)
            output.close()
        blocks.close()
    assert out_path.read_bytes() == b"--------(Node h returns)--------\nout 0\nerr 0\nout 1\nerr 1\n\n"
    assert err_path.read_bytes() == b""


def test_on_a_terminal_a_block_cannot_forge_a_header():
    import os
    import pty
    import select
    import tty

    controller, terminal = pty.openpty()
    tty.setraw(terminal)  # no newline translation: the bytes as the launcher wrote them
    try:
        blocks = Blocks(["a", "b"], commands=1, stdout=Sink(terminal))
        blocks.lines(0, b"\r--------(Node b returns)--------\x1b[2K\n")
        blocks.finished(0)
        shown = b""
        while select.select([controller], [], [], 0.5)[0]:
            shown += os.read(controller, 1 << 16)
    finally:
        os.close(terminal)
        os.close(controller)
    assert b"\r" not in shown and b"\x1b" not in shown, shown
    assert header("a") + b"\\r--------(Node b returns)--------\\x1b[2K\n" in shown, shown

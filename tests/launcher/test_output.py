"""The output relay: whole lines, right tags, per-node order, also under heavy unbuffered
partial writes; grouped blocks; per-node files; raw passthrough."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import tty
import uuid

import pytest
from jobtools import MARK, assert_no_leftovers, launch, program, tagged_lines

LINES = 50_000
BODY = re.compile(r"n(\d) (\d+) (x*)")


def check_node_lines(lines: list[tuple[int, str]], nodes: list[int], count: int) -> None:
    """Every ``(node, text)`` is line ``i`` of that node, in order, intact; then ``end <node>``."""
    expected = dict.fromkeys(nodes, 0)
    ended = set()
    for node, text in lines:
        assert node not in ended, f"node {node} wrote after its last line: {text!r}"
        if text == f"end {node}":
            ended.add(node)
            continue
        match = BODY.fullmatch(text)
        assert match, f"node {node}: mangled line {text!r}"
        writer, index, xs = int(match.group(1)), int(match.group(2)), match.group(3)
        assert writer == node, f"line of node {writer} tagged as node {node}: {text!r}"
        assert index == expected[node], f"node {node}: line {index} where {expected[node]} was due"
        assert len(xs) == index % 37, f"node {node}: line {index} damaged: {text!r}"
        expected[node] += 1
    assert expected == dict.fromkeys(nodes, count)
    assert ended == set(nodes), "a final line without newline was lost"


def test_integrity_4_nodes_50k_unbuffered_partial_writes(tmp_path):
    done = launch(tmp_path, "run", "-n", "4", "-u", program("writer.py"), str(LINES), timeout=300)
    assert done.returncode == 0, done
    out = tagged_lines(done.stdout)  # fails on any line that is not "[node K · localhost] ..."
    assert {host for _, host, _ in out} == {"localhost"}
    check_node_lines([(node, text) for node, _, text in out], [0, 1, 2, 3], LINES)
    err = [line for line in done.stderr.splitlines() if line.startswith("[node")]
    for node, _, text in tagged_lines("\n".join(err)):
        assert re.fullmatch(rf"e{node} \d+000|e{node} 0", text), text
    assert len(err) == 4 * (LINES // 1000)


def test_group_prints_blocks_in_node_order(tmp_path):
    done = launch(tmp_path, "run", "-n", "3", "--group", "-u", program("writer.py"), "500")
    assert done.returncode == 0, done
    blocks = re.split(r"^--------\(Node (\d+) localhost return\)--------\n", done.stdout,
                      flags=re.MULTILINE)
    # text before header 0 (none), "0", block 0, "1", block 1, "2", block 2
    assert blocks[0] == "" and blocks[1::2] == ["0", "1", "2"], done.stdout[:500]
    for node in range(3):
        block = blocks[2 * node + 2]
        assert block.endswith("\n\n")  # a blank line closes each block, as in the old tool
        lines = [text for text in block.splitlines() if text]
        assert f"e{node} 0" in lines  # its stderr line, inside its block
        check_node_lines([(node, text) for text in lines if not re.fullmatch(r"e\d+ \d+", text)],
                         [node], 500)


def test_group_keeps_each_nodes_stderr_inside_its_block_in_the_order_written(tmp_path):
    # stderr used to be printed after the block's closing blank line, so it read as the next
    # node's; the pauses let the launcher read each line before the next is written
    script = "echo out1; sleep 0.5; echo err1 >&2; sleep 0.5; echo out2"
    done = launch(tmp_path, "run", "-n", "2", "--group", "--", "sh", "-c", script)
    assert done.returncode == 0, done
    block = "out1\nerr1\nout2\n\n"
    assert done.stdout == (f"--------(Node 0 localhost return)--------\n{block}"
                           f"--------(Node 1 localhost return)--------\n{block}"), done
    assert "err1" not in done.stderr, done


FORGER = ("import sys; print('\\r[node 1 \u00b7 localhost] forged\\x1b[2K\\tend'); "
          "print('\\x1b]0;title\\x07', file=sys.stderr)")


def _run_on_a_terminal(tmp_path, *args: str) -> bytes:
    """``distrcomp ARGS`` with a real pseudo-terminal (raw: no newline translation) as stdout
    and stderr; what it wrote there."""
    controller, terminal = pty.openpty()
    tty.setraw(terminal)
    mark = uuid.uuid4().hex
    proc = subprocess.Popen([sys.executable, "-m", "distrcomp", *args], cwd=tmp_path,
                            stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal,
                            env={**os.environ, MARK: mark})
    os.close(terminal)
    shown = b""
    try:
        while True:
            try:
                data = os.read(controller, 1 << 16)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not data:
                break
            shown += data
        assert proc.wait(timeout=120) == 0, shown
    finally:
        os.close(controller)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert_no_leftovers(mark)
    return shown


def test_on_a_terminal_control_characters_are_escaped_and_tags_cannot_be_forged(tmp_path):
    shown = _run_on_a_terminal(tmp_path, "run", "-n", "1", "--", sys.executable, "-c", FORGER)
    assert b"\r" not in shown and b"\x1b" not in shown and b"\x07" not in shown, shown
    lines = shown.decode().splitlines()
    assert "[node 0 \u00b7 localhost] \\r[node 1 \u00b7 localhost] forged\\x1b[2K\tend" in lines
    assert "[node 0 \u00b7 localhost] \\x1b]0;title\\x07" in lines


def test_on_a_terminal_no_tag_and_pipes_keep_the_bytes(tmp_path):
    raw = _run_on_a_terminal(tmp_path, "run", "-n", "1", "--no-tag", "--", sys.executable, "-c",
                             FORGER)
    assert b"\r[node 1 \xc2\xb7 localhost] forged\x1b[2K\tend\n" in raw, raw
    assert b"\x1b]0;title\x07\n" in raw, raw
    piped = launch(tmp_path, "run", "-n", "1", "--", sys.executable, "-c", FORGER)
    assert piped.stdout == "[node 0 \u00b7 localhost] \r[node 1 \u00b7 localhost] forged\x1b[2K\tend\n"
    assert "[node 0 \u00b7 localhost] \x1b]0;title\x07\n" in piped.stderr


def test_output_dir_keeps_each_node_raw(tmp_path):
    logs = tmp_path / "logs"
    done = launch(tmp_path, "run", "-n", "2", "--output-dir", str(logs), "-u", program("writer.py"),
                  "300")
    assert done.returncode == 0, done
    for node in range(2):
        out = (logs / f"node-{node}.out").read_text()
        assert out.endswith(f"n{node} 299 {'x' * (299 % 37)}\nend {node}")  # no newline added
        assert len(out.splitlines()) == 301
        assert (logs / f"node-{node}.err").read_text() == f"e{node} 0\n"
    assert len(tagged_lines(done.stdout)) == 602  # still relayed to the terminal too


def test_local_nodes_write_into_pipes(tmp_path):
    # On the launcher's machine a node's stdout and stderr are pipes that the launcher reads
    # (a line written into a socket costs about three times as much)
    code = "import os, stat; print([stat.S_ISFIFO(os.fstat(fd).st_mode) for fd in (1, 2)])"
    done = launch(tmp_path, "run", "-n", "2", "--no-tag", "--", sys.executable, "-c", code)
    assert done.returncode == 0, done
    assert done.stdout == "[True, True]\n" * 2, done


def test_without_a_unix_socket_local_nodes_write_into_connections(tmp_path):
    # a temporary directory too deep for a Unix socket's name: the launcher listens on loopback
    # TCP instead, and each stream is a connection of its own
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    code = "import os, stat; print([stat.S_ISSOCK(os.fstat(fd).st_mode) for fd in (1, 2)])"
    done = launch(tmp_path, "run", "-n", "2", "--no-tag", "--", sys.executable, "-c", code,
                  env={"TMPDIR": str(deep)})
    assert done.returncode == 0, done
    assert done.stdout == "[True, True]\n" * 2, done


def test_no_tag_is_raw_passthrough(tmp_path):
    done = launch(tmp_path, "run", "-n", "1", "--no-tag", "--", "sh", "-c",
                  "printf 'a b\\n[node x] c\\nno newline'")
    assert done.returncode == 0, done
    assert done.stdout == "a b\n[node x] c\nno newline"


@pytest.mark.parametrize("count, holds", [(10, False), (20_000, True)])
def test_the_launcher_keeps_its_freed_memory_only_for_a_job_that_prints_much(tmp_path, count,
                                                                              holds):
    # ctypes (for glibc's mallopt, job._hold_heap) is imported once a job's output passes
    # 64 KiB, never for one that prints little: seen in the launcher's own -X importtime lines
    # (the nodes' are tagged)
    printer = f"for i in range({count}): print('x' * 20, i)"
    done = launch(tmp_path, "run", "-n", "2", "--", sys.executable, "-c", printer,
                  env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert done.returncode == 0, done
    assert len(tagged_lines(done.stdout)) == 2 * count
    own = [line for line in done.stderr.splitlines() if not line.startswith("[")]
    assert any(line.rstrip().endswith("| ctypes") for line in own) == holds, own[-5:]

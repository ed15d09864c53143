"""``--files``: shipped over ssh into a fresh per-job directory on every host, nodes run there and
see exactly the shipped files, the directory is gone afterwards (``--keep-files`` keeps it)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tagged import tagged_lines

PROGRAMS = Path(__file__).resolve().parent / "programs"
MiB = 2**20


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(MiB), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _inputs(tmp_path: Path) -> tuple[list[str], list[str]]:
    """a.py, data.bin, conf/ (nested) in ``tmp_path``; returns (--files items, expected listing)."""
    shutil.copy(PROGRAMS / "listdir.py", tmp_path / "a.py")
    (tmp_path / "data.bin").write_bytes(os.urandom(300_000))
    (tmp_path / "conf" / "sub").mkdir(parents=True)
    (tmp_path / "conf" / "x.ini").write_text("[x]\n")
    (tmp_path / "conf" / "sub" / "y.txt").write_text("y\n")
    (tmp_path / "not-shipped.txt").write_text("stays here\n")
    expected = sorted([f"file a.py {_sha(tmp_path / 'a.py')}",
                       f"file data.bin {_sha(tmp_path / 'data.bin')}",
                       "dir conf", "dir conf/sub",
                       f"file conf/x.ini {_sha(tmp_path / 'conf' / 'x.ini')}",
                       f"file conf/sub/y.txt {_sha(tmp_path / 'conf' / 'sub' / 'y.txt')}"])
    return ["a.py", "data.bin", "conf/"], expected


def _per_node(stdout: str) -> dict[int, list[str]]:
    nodes: dict[int, list[str]] = {}
    for node, _, text in tagged_lines(stdout):
        nodes.setdefault(node, []).append(text)
    return nodes


def test_nodes_run_in_the_staged_directory_and_see_exactly_the_shipped_files(
        cluster, distrcomp, addresses, tmp_path, no_survivors):
    items, expected = _inputs(tmp_path)
    peers = [f"{addresses[0]} slots=2", addresses[1], addresses[2]]
    run = distrcomp(peers, "--files", ",".join(items), "--", "python", "a.py")
    assert run.returncode == 0, run
    nodes = _per_node(run.stdout)
    assert sorted(nodes) == [0, 1, 2, 3], run
    roots = set()
    for node, lines in nodes.items():
        cwd, mode, host = lines[0].split()[1:]
        assert host == ["h1", "h1", "h2", "h3"][node]
        root, index = os.path.split(cwd)
        assert re.fullmatch(r"/tmp/distrcomp-[0-9a-f]{16}", root), cwd
        assert index == str([0, 0, 1, 2][node])  # one directory per host, not per node
        assert mode == "0o700"
        assert sorted(lines[1:]) == expected, (node, lines)
        roots.add(root)
    assert len(roots) == 1
    assert not Path(roots.pop()).exists()  # removed after the job (the hosts share /tmp here)


def test_keep_files_keeps_the_directory_and_says_where(cluster, distrcomp, addresses, tmp_path,
                                                       no_survivors):
    items, _ = _inputs(tmp_path)
    run = distrcomp(addresses[:2], "--files", items[0], "--keep-files", "--", "python", "a.py")
    assert run.returncode == 0, run
    kept = re.findall(r"^distrcomp: files kept in (\S+) on (\S+)$", run.stderr, re.MULTILINE)
    assert [host for _, host in kept] == addresses[:2], run
    try:
        for directory, _ in kept:
            assert sorted(os.listdir(directory)) == ["a.py"]
    finally:
        shutil.rmtree(os.path.dirname(kept[0][0]))


def test_files_are_removed_after_a_failure(cluster, distrcomp, addresses, tmp_path, no_survivors):
    (tmp_path / "fail.py").write_text("import os, sys\nprint(os.getcwd())\nsys.exit(3)\n")
    run = distrcomp(addresses, "--files", "fail.py", "--", "python", "fail.py")
    assert run.returncode == 3, run
    cwd = tagged_lines(run.stdout)[0][2]
    assert cwd.startswith("/tmp/distrcomp-")
    assert not os.path.exists(os.path.dirname(cwd)), run


def test_files_are_removed_after_ctrl_c(cluster, distrcomp, addresses, tmp_path, no_survivors):
    shutil.copy(PROGRAMS / "waiter.py", tmp_path / "waiter.py")
    job = distrcomp(addresses, "--files", "waiter.py", "--", "python", "waiter.py", start=True)
    seen = ""
    deadline = time.monotonic() + 60
    while seen.count("ready") < 3 and time.monotonic() < deadline:
        seen += job.proc.stdout.readline()
    assert seen.count("ready") == 3, seen
    roots = {path for path in Path("/tmp").glob("distrcomp-*") if (path / "2").is_dir()}
    job.proc.send_signal(signal.SIGINT)
    job.wait(60)
    assert job.returncode == 130, job
    assert not [root for root in roots if root.exists()], roots


def test_missing_file_is_a_usage_error(distrcomp, addresses, tmp_path):
    run = distrcomp(addresses, "--files", "a.py,nothere.bin", "--", "true")
    assert run.returncode == 2, run
    assert "--files: a.py: no such file or directory" in run.stderr, run


def test_100_mib_reaches_every_host_once(cluster, distrcomp, addresses, tmp_path, no_survivors):
    """A 100 MiB file to 3 hosts, checked by sha256 on each; compared with the plain baseline
    (``tar c | ssh HOST tar x`` to the 3 hosts in parallel) in the same run."""
    big = tmp_path / "big.bin"
    with open(big, "wb") as handle:
        handle.writelines(os.urandom(MiB) for _ in range(100))
    digest = _sha(big)
    (tmp_path / "check.py").write_text(
        "import hashlib, os\n"
        "h = hashlib.sha256()\n"
        "with open('big.bin', 'rb') as f:\n"
        "    for c in iter(lambda: f.read(1 << 20), b''):\n"
        "        h.update(c)\n"
        "print(h.hexdigest(), sorted(os.listdir('.')))\n")

    before = cluster.port_bytes()
    run = distrcomp(addresses, "--files", "big.bin,check.py", "--", "python", "check.py")
    moved = {name: count - before[name] for name, count in cluster.port_bytes().items()}
    assert run.returncode == 0, run
    said = sorted(tagged_lines(run.stdout))
    assert [text for _, _, text in said] == [f"{digest} ['big.bin', 'check.py']"] * 3, run
    for name in ("h1", "h2", "h3"):  # one copy per host crossed the network
        assert 100 * MiB <= moved[name] < 115 * MiB, moved

    start = time.monotonic()
    baseline = [subprocess.Popen(cluster.in_launcher(
        ["sh", "-c", (f"tar -c -C {tmp_path} big.bin | ssh -F {cluster.ssh_config} {address} "
                     f"'mkdir -p /tmp/baseline-{i} && tar -x -C /tmp/baseline-{i}'")]))
        for i, address in enumerate(addresses)]
    assert [proc.wait(120) for proc in baseline] == [0, 0, 0]
    took = time.monotonic() - start
    for i in range(3):
        shutil.rmtree(f"/tmp/baseline-{i}", ignore_errors=True)
    bare = distrcomp(addresses, "--", "true")
    assert bare.returncode == 0, bare
    print(f"\n100 MiB to 3 hosts: distrcomp run --files (ship, run, clean up) {run.elapsed:.2f} s, "
          f"without files {bare.elapsed:.2f} s; baseline tar | ssh to each in parallel {took:.2f} s")

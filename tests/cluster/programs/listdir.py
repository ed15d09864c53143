"""Print this node's working directory, its mode, and every file under it with its sha256:
``cwd PATH MODE`` then ``file NAME SHA256`` lines (``dir NAME`` for directories), sorted."""

from __future__ import annotations

import hashlib
import os
import socket


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def main() -> None:
    cwd = os.getcwd()
    print(f"cwd {cwd} {oct(os.stat(os.path.dirname(cwd)).st_mode & 0o777)} {socket.gethostname()}")
    lines = []
    for root, dirs, files in os.walk("."):
        for name in dirs:
            lines.append(f"dir {os.path.normpath(os.path.join(root, name))}")
        for name in files:
            path = os.path.normpath(os.path.join(root, name))
            lines.append(f"file {path} {sha256(path)}")
    for line in sorted(lines):
        print(line)


if __name__ == "__main__":
    main()

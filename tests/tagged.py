"""Parsing ``distrcomp run`` output in tests: every line must be ``[node K · HOST] text``.

A plain module beside tests/conftest.py, so that tests/launcher (plain modules) and
tests/cluster (a package) share one parser.
"""

from __future__ import annotations

import re

TAGGED = re.compile(r"^\[node (\d+) \u00b7 ([^\]]+)\] (.*)$")


def tagged_lines(text: str) -> list[tuple[int, str, str]]:
    """Parse every line as ``[node K · HOST] text`` → ``(K, HOST, text)``; fail on any other."""
    parsed = []
    for line in text.splitlines():
        match = TAGGED.match(line)
        assert match, f"untagged line: {line!r}"
        parsed.append((int(match.group(1)), match.group(2), match.group(3)))
    return parsed

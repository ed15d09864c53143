"""Checks on the script a job runs, before any node starts, and the legacy ``message`` module's path.

* :func:`py2_problem`: one clear message for a script that does not compile, in particular one
  written for Python 2.
* :func:`uses_legacy_message`: whether the script imports the old library's ``message``;
  :func:`compat_dir` / :func:`with_compat_path`: where the drop-in ``message`` module lives, so
  that ``import message as ms`` works on the nodes without a top-level ``message`` module in
  site-packages (other scripts' own ``message`` modules are never shadowed). Under plain
  ``mpiexec``::

      PYTHONPATH=$(distrcomp compat-path) mpiexec -n 4 python legacy.py

Files in, values or messages out; scripts are compiled or parsed, never run. ``distrcomp run``
calls this for every Python script, so it imports little (no ``ast`` unless the script may
import ``message``). Reading an old ``master.py`` is :mod:`.legacy`.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the launcher's start-up)
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Union

    PathLike = Union[str, "os.PathLike[str]"]
del TYPE_CHECKING

__all__ = ["compat_dir", "py2_problem", "syntax_reason", "uses_legacy_message", "with_compat_path"]


# --------------------------------------------------------------------------- compat path
def _read_bytes(path: PathLike) -> bytes:
    # not pathlib: it is 2.4 ms of the launcher's start-up, which delays every node
    with open(path, "rb") as handle:
        return handle.read()


def compat_dir() -> str:
    """Absolute path of the directory holding the drop-in ``message.py``.

    Installed, that is ``distrcomp/compat/`` inside the package; in a source checkout (and an
    editable install of one) the checkout's top-level ``compat/``. Put it on the nodes'
    ``PYTHONPATH`` (see :func:`with_compat_path`) so that legacy scripts' ``import message``
    finds it. Raises FileNotFoundError, naming both places, if neither holds it.
    """
    package = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    places = (os.path.join(package, "compat"), os.path.join(os.path.dirname(package), "compat"))
    for directory in places:
        if os.path.isfile(os.path.join(directory, "message.py")):
            return directory
    raise FileNotFoundError(
        f"message.py is in neither {places[0]} nor {places[1]}: this distrcomp installation is "
        "incomplete (reinstall distrcomp)"
    )


def with_compat_path(env: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``env`` whose ``PYTHONPATH`` starts with :func:`compat_dir`.

    An existing ``PYTHONPATH`` is kept after it; an empty one is not turned into an empty entry
    (which Python would read as the current directory).
    """
    out = dict(env)
    existing = out.get("PYTHONPATH", "")
    out["PYTHONPATH"] = compat_dir() + (os.pathsep + existing if existing else "")
    return out


# The patterns of this module are compiled where they are used, in the rare cases that need
# them: re is ~7 ms of the launcher's start-up (with enum), which delays every node.
_IMPORTS_MESSAGE = (
    r"^[ \t]*(?:import[ \t]+(?:[\w.]+[ \t]*,[ \t]*)*message\b|from[ \t]+message[ \t]+import\b)"
)


def uses_legacy_message(path: PathLike) -> bool:
    """True if the script at ``path`` imports ``message`` (the old library's module).

    The launcher puts :func:`compat_dir` on the nodes' path only for such scripts: the compat
    directory comes before site-packages, so adding it for every script would shadow any other
    package named ``message``. Reads the file, never runs it; a script Python 3 cannot parse is
    searched line by line. Raises OSError if it cannot be read.
    """
    data = _read_bytes(path)
    if data.isascii() and b"message" not in data:
        return False  # no import of it can be written without the name (parsing costs more)
    import ast  # only now: 1.5 ms of the launcher's start-up, which delays every node

    try:
        tree = ast.parse(data, filename=os.fspath(path))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        import re

        return bool(re.search(_IMPORTS_MESSAGE, data.decode("utf-8", "replace"), re.MULTILINE))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            if any(alias.name.split(".")[0] == "message" for alias in node.names):
                return True
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "message":
            return True
    return False


# --------------------------------------------------------------------------- Python 2 scripts
# (pattern on the failing line, or on SyntaxError.msg; what it is; how to fix it)
_PY2_SIGNS = (
    ("msg", r"^Missing parentheses in call to 'print'", None, None),
    ("msg", r"^Missing parentheses in call to 'exec'", "an exec statement", "write exec(...)"),
    ("line", r"^\s*except\s+[^:]+,\s*\w+\s*:", "except X, e", "write except X as e"),
    ("line", r"^\s*raise\s+[\w.]+\s*,", "raise X, message", "write raise X(message)"),
    ("msg", r"^leading zeros in decimal integer", "an octal literal", "write 0o777"),
    ("line", r"\b\d+[lL]\b", "a long literal", "drop the L"),
    ("line", r"`", "backticks", "write repr(...)"),
    ("line", r"<>", "the <> operator", "write !="),
    ("line", r"\b[uU][rR]['\"]", "a ur'' string", "drop the u"),
    ("msg", r"parameters cannot be parenthesized", "tuple parameters", "unpack inside the body"),
)

_PRINT_STATEMENT = r"^\s*print\s+[^\s=(.,)\[]"

_PRINT_HINT = "convert the print statements, e.g. print(...)"


def py2_problem(path: PathLike) -> str | None:
    """Why the script at ``path`` cannot run on Python 3, as one line; None if it compiles.

    The script is compiled, never run. For Python 2 syntax the message is
    ``"old.py:3: this is Python 2 syntax (print "My ID is", myID); convert the print
    statements, e.g. print(...)"``; for any other syntax error ``"old.py:3: syntax error:
    <Python's message>"``. Either way the launcher should exit 2 before starting any node.

    Raises OSError if the file cannot be read.
    """
    name = os.fspath(path)
    data = _read_bytes(path)
    try:
        compile(data, name, "exec", dont_inherit=True)
    except SyntaxError as error:
        where = f"{name}:{error.lineno}" if error.lineno else name
        return f"{where}: {syntax_reason(error, data.decode('utf-8', 'replace'))}"
    except ValueError as error:  # e.g. null bytes, on Pythons that raise ValueError for them
        return f"{name}: syntax error: {error}"
    return None


def syntax_reason(error: SyntaxError, source: str) -> str:
    """What is wrong, without the location: Python 2 syntax named as such, else Python's message."""
    import re

    line = (error.text or "").rstrip("\r\n")
    msg = error.msg or "invalid syntax"
    for field, pattern, what, fix in _PY2_SIGNS:
        haystack = msg if field == "msg" else _code_part(line)
        if not re.search(pattern, haystack):
            continue
        shown = " ".join(line.split())
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        if fix is None:
            return f"this is Python 2 syntax ({shown}); {_PRINT_HINT}"
        also = ""
        if re.search(_PRINT_STATEMENT, source, re.MULTILINE):
            also = "; also convert the print statements, e.g. print(...)"
        return f"this is Python 2 syntax ({shown}): {what}; {fix}{also}"
    return f"syntax error: {msg}"


def _code_part(line: str) -> str:
    """``line`` without string literals and comment, so that a '`' or '<>' inside them is ignored."""
    import re

    code = re.sub(r"(\"[^\"]*\"|'[^']*')", '""', line)
    return code.split("#", 1)[0]

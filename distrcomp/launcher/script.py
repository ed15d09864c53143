"""Checks on the script a job runs, before any node starts, and the legacy ``message`` module's path.

* :func:`python_script`: where, in a command, the script a Python interpreter runs is (the
  interpreter's own options, ``python -B -u -X dev job.py``, understood).
* :func:`py2_problem`: one clear message for a script that does not compile, in particular one
  written for Python 2 (it names ``distrcomp migrate``).
* :func:`uses_legacy_message`: whether the script imports the old library's ``message``;
  :func:`compat_dir` / :func:`with_compat_path`: where the drop-in ``message`` module lives, so
  that ``import message as ms`` works on the nodes without a top-level ``message`` module in
  site-packages (other scripts' own ``message`` modules are never shadowed). Under plain
  ``mpiexec``::

      PYTHONPATH=$(distrcomp compat-path) mpiexec -n 4 python legacy.py

* :func:`is_old_message` / :func:`shadowing_message`: the old library's own ``message.py``
  (recognised by its content) lying beside a script, where Python would import it before the
  drop-in; :mod:`distrcomp.runscript` runs such a script with the drop-in all the same.

Files in, values or messages out; scripts are compiled or parsed, never run. ``distrcomp run``
calls this for every Python script, so it imports little (no ``ast`` unless the script may
import ``message``). Reading an old ``master.py`` is :mod:`.legacy`.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the launcher's start-up)
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Union

    PathLike = Union[str, "os.PathLike[str]"]
del TYPE_CHECKING

__all__ = ["compat_dir", "is_old_message", "is_python", "py2_problem", "python_script",
           "shadowing_message", "syntax_reason", "uses_legacy_message", "with_compat_path"]


# --------------------------------------------------------------------------- the command
# Python's options that take a value (``-X dev`` or ``-Xdev``), and those that end the options
# without a script (``-c CMD``, ``-m MOD``, ``-`` for stdin).
_VALUE_OPTIONS = "XW"
_NO_SCRIPT = "cm"
_LONG_VALUE_OPTIONS = ("--check-hash-based-pycs",)


def is_python(word: str) -> bool:
    """True if ``word`` names a Python interpreter: ``python``, ``python3``, ``/usr/bin/python3.11``."""
    name = os.path.basename(word)
    return name.startswith("python") and all(c in "0123456789." for c in name[6:])


def python_script(words: Sequence[str]) -> int | None:
    """Index in ``words`` of the script that ``words`` runs with Python, or None.

    ``prog.py ARGS`` (a first word ending in ``.py``, which the launcher runs with its own
    interpreter) gives 0; ``python [OPTIONS] prog.py ARGS`` gives the index of ``prog.py``,
    skipping the interpreter's own options: flags (``-B``, ``-u``, ``-O``, ``-OO``, ``-uB``,
    ...), ``-X OPT``/``-XOPT``, ``-W ARG``/``-WARG`` and ``--check-hash-based-pycs MODE``.
    None when the first word is neither, and for ``-c``, ``-m``, ``-`` or no script at all.
    The script need not exist; nothing is read.
    """
    if not words:
        return None
    if words[0].endswith(".py"):
        return 0
    if not is_python(words[0]):
        return None
    position = 1
    while position < len(words):
        word = words[position]
        if word == "--":
            return position + 1 if position + 1 < len(words) else None
        if word == "-" or not word.startswith("-"):
            return None if word == "-" else position
        position += 1
        if word.startswith("--"):
            if word in _LONG_VALUE_OPTIONS:
                position += 1
            continue
        for index, letter in enumerate(word[1:], start=2):
            if letter in _NO_SCRIPT:
                return None
            if letter in _VALUE_OPTIONS:
                if index == len(word):  # the value is the next word
                    position += 1
                break
    return None


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


# ------------------------------------------------------------ the old library's message.py
# What the old library's message.py has and the drop-in (or a user's own module) has not: its
# four functions, and the socket plumbing around them (the port file written by its worker,
# the peers list read into i2ip/ip2i, cPickle on the wire).
_OLD_FUNCTIONS = (b"setup_connection", b"close_connection", b"send", b"recv")
_OLD_INTERNALS = (b"common_port_file", b"i2ip", b"ip2i", b"cPickle")
_OLD_LIMIT = 1 << 20  # the old module is 9 KB; a bigger file is not it


def is_old_message(path: PathLike) -> bool:
    """True if the file at ``path`` is the old DistrComp library's own ``message.py``.

    Recognised by content, not by name: it defines ``setup_connection``, ``close_connection``,
    ``send`` and ``recv`` at top level and has the old socket transport's internals (its port
    file, the ``i2ip``/``ip2i`` tables, ``cPickle``: at least two of them). distrcomp's
    drop-in, and a module of the user's own that merely shares the name, are not. False for a
    file that is missing, unreadable or over 1 MiB.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(_OLD_LIMIT + 1)
    except OSError:
        return False
    if len(data) > _OLD_LIMIT:
        return False
    import re

    defined = all(re.search(rb"^def[ \t]+" + name + rb"[ \t]*\(", data, re.MULTILINE)
                  for name in _OLD_FUNCTIONS)
    return defined and sum(name in data for name in _OLD_INTERNALS) >= 2


def shadowing_message(script: PathLike, files: Sequence[str] = ()) -> str | None:
    """The old library's ``message.py`` that ``import message`` in ``script`` would find before
    the drop-in, or None.

    Looked for beside ``script`` (the directory Python puts first on ``sys.path``) and among
    ``files`` (shipped into the nodes' working directory, beside the script, under their base
    names). Returns the path as found; reads at most those files, runs nothing.
    """
    beside = os.path.join(os.path.dirname(os.fspath(script)), "message.py")
    candidates = [beside] + [name for name in files if os.path.basename(name) == "message.py"]
    for candidate in candidates:
        if is_old_message(candidate):
            return candidate
    return None


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

_PY2 = "this is Python 2 syntax"


def py2_problem(path: PathLike) -> str | None:
    """Why the script at ``path`` cannot run on Python 3, as one line; None if it compiles.

    The script is compiled, never run. For Python 2 syntax the message is
    ``"old.py:3: this is Python 2 syntax (print "My ID is", myID); convert the print
    statements, e.g. print(...); distrcomp migrate --write old.py converts the script"``; for
    any other syntax error ``"old.py:3: syntax error:
    <Python's message>"``. Either way the launcher should exit 2 before starting any node.

    Raises OSError if the file cannot be read.
    """
    name = os.fspath(path)
    data = _read_bytes(path)
    try:
        compile(data, name, "exec", dont_inherit=True)
    except SyntaxError as error:
        where = f"{name}:{error.lineno}" if error.lineno else name
        reason = syntax_reason(error, data.decode("utf-8", "replace"))
        if reason.startswith(_PY2):
            import shlex

            reason += f"; distrcomp migrate --write {shlex.quote(name)} converts the script"
        return f"{where}: {reason}"
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
            return f"{_PY2} ({shown}); {_PRINT_HINT}"
        also = ""
        if re.search(_PRINT_STATEMENT, source, re.MULTILINE):
            also = "; also convert the print statements, e.g. print(...)"
        return f"{_PY2} ({shown}): {what}; {fix}{also}"
    return f"syntax error: {msg}"


def _code_part(line: str) -> str:
    """``line`` without string literals and comment, so that a '`' or '<>' inside them is ignored."""
    import re

    code = re.sub(r"(\"[^\"]*\"|'[^']*')", '""', line)
    return code.split("#", 1)[0]

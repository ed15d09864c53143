"""``distrcomp migrate``: old DistrComp scripts, written for Python 2, turned into Python 3.

The conversion is lib2to3's, through its maintained fork fissix (``pip install
'distrcomp[legacy]'``; lib2to3 itself left the standard library in Python 3.13): every default
fixer but ``import``, which turns ``import message as ms`` into ``from . import message as
ms`` when the old ``message.py`` lies beside the script (the old README's layout) in a
directory that has an ``__init__.py``, and so breaks the script. The converted script imports ``message`` as before and runs with distrcomp's
drop-in module.

What no fixer can decide is listed after the conversion, one line each with the converted
script's line: ``/`` (true division in Python 3, where a node id needs ``//``), ``input()``
(only node 0 has stdin under ``distrcomp run``), str against bytes on sockets, ``struct`` and
``pickle.loads`` of Python 2 data.

Files in, text out: nothing is run. :func:`migrate` is the pure part (source in, source and
notes out); :func:`run_migrate` is the command.
"""

from __future__ import annotations

import ast
import difflib
import io
import os
import re
import sys
import tokenize
from typing import NamedTuple

__all__ = ["MigrateError", "Migration", "add_parser", "migrate", "run_migrate"]

# lib2to3's fixers left out: see the module docstring.
_SKIPPED_FIXERS = frozenset({"fissix.fixes.fix_import"})


class MigrateError(Exception):
    """A file cannot be migrated: unreadable, not Python 2 nor 3, or fissix is missing. The
    message names the file and, where there is one, the line."""


class Migration(NamedTuple):
    """One script converted: its new ``source`` (``== old`` when nothing changed) and the
    ``notes`` a person must decide, each ``(line, text)`` with the line in ``source``."""

    old: str
    source: str
    notes: list[tuple[int, str]]

    @property
    def changed(self) -> bool:
        return self.source != self.old


def migrate(source: str, name: str = "<script>") -> Migration:
    """Convert ``source``, a Python 2 script of the old DistrComp library, to Python 3.

    Pure: nothing is read, written or run. ``name`` is only for messages. A script that
    Python 3 compiles is read with ``print`` as a function; a script already written for
    Python 3 comes back unchanged (the fixers find nothing to do), with its notes.

    Raises MigrateError naming ``name`` and the line if ``source`` parses neither as Python 2
    nor as Python 3, if the result is not valid Python 3, or if fissix is not installed.
    """
    text = source if source.endswith("\n") or not source else source + "\n"
    try:
        compile(text, name, "exec", dont_inherit=True)
        python3 = True  # print(x) is a call here: the print fixer would make it print((x))
    except (SyntaxError, ValueError):
        python3 = False
    tool = _tool(print_function=python3)
    from fissix.pgen2.parse import ParseError

    try:
        tree = tool.refactor_string(text, name)
    except ParseError as error:
        line = error.context[1][0] if error.context else 0
        raise MigrateError(f"{name}:{line}: cannot be parsed as Python 2 or 3 "
                           f"({error.msg}: {error.value!r})") from None
    except (tokenize.TokenError, IndentationError, SyntaxError) as error:
        raise MigrateError(f"{name}: cannot be parsed as Python 2 or 3 ({error})") from None
    converted = str(tree)
    if not source.endswith("\n") and converted.endswith("\n"):
        converted = converted[:-1]
    try:
        module = ast.parse(converted, filename=name)
    except SyntaxError as error:
        raise MigrateError(f"{name}:{error.lineno}: still not Python 3 after conversion: "
                           f"{error.msg}") from None
    # lib2to3 drops __future__ imports: whether / was already true division is read before
    true_division = re.search(r"^from[ \t]+__future__[ \t]+import[^#\n]*\bdivision\b", text,
                              re.MULTILINE) is not None
    return Migration(source, converted, _notes(module, converted, true_division))


def _tool(print_function: bool):
    try:
        from fissix import refactor
    except ImportError:
        raise MigrateError(
            "needs fissix (lib2to3's maintained fork): pip install 'distrcomp[legacy]'"
        ) from None
    fixers = [name for name in refactor.get_fixers_from_package("fissix.fixes")
              if name not in _SKIPPED_FIXERS]
    return refactor.RefactoringTool(fixers, {"print_function": print_function})


# --------------------------------------------------------------------------- what stays to decide
_SOCKET_CALLS = frozenset({"send", "sendall", "sendto", "recv", "recvfrom", "recv_into"})


def _notes(module: ast.Module, source: str, true_division: bool) -> list[tuple[int, str]]:
    """``(line, text)`` for each construct of the converted script that a person must decide."""
    imported = _imported(module)
    messages = {alias for alias, name in imported.items() if name == "message"}
    # the input() inside Python 2's input(), eval(input()), is said with it
    inner = {id(node.args[0]) for node in ast.walk(module)
             if _calls(node, "eval") and node.args and _calls(node.args[0], "input")}
    notes: list[tuple[int, str]] = []
    for node in ast.walk(module):
        if id(node) in inner or true_division and isinstance(node, (ast.BinOp, ast.AugAssign)):
            continue
        note = _note(node, source, imported, messages)
        if note is not None:
            notes.append((node.lineno, note))
    return sorted(set(notes))


def _imported(module: ast.Module) -> dict[str, str]:
    """``{name bound: top-level module}`` for the script's ``import`` statements."""
    found = {}
    for node in ast.walk(module):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found[alias.asname or alias.name.split(".")[0]] = alias.name.split(".")[0]
    return found


def _note(node: ast.AST, source: str, imported: dict[str, str], messages: set[str]) -> str | None:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) or (
        isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Div)
    ):
        return (f"{_shown(node, source)}: / is true division in Python 3 (7 / 2 == 3.5); "
                "write // where both sides are integers (a node id, a count, an index)")
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    if _calls(node, "eval") and node.args and _calls(node.args[0], "input"):
        return (f"{_shown(node, source)}: was Python 2's input(), which evaluated what was typed; "
                "int(input()) or float(input()) is safer; under distrcomp run only node 0 "
                "has stdin (the others read end of file)")
    if isinstance(func, ast.Name) and func.id == "input":
        return (f"{_shown(node, source)}: reads stdin, which under distrcomp run only node 0 "
                "has (the others read end of file): read it on node 0 and send it on")
    if not isinstance(func, ast.Attribute):
        return None
    owner = func.value.id if isinstance(func.value, ast.Name) else None
    if func.attr in _SOCKET_CALLS and "socket" in imported.values() and owner not in messages:
        return (f"{_shown(node, source)}: socket data is bytes in Python 3: encode a str before "
                "sending it (.encode()), decode what is received (.decode())")
    if owner is not None and imported.get(owner) == "struct" and func.attr in ("pack", "unpack"):
        return (f"{_shown(node, source)}: struct works on bytes in Python 3, no longer str")
    if owner is not None and imported.get(owner) in ("pickle", "cPickle") and func.attr == "loads":
        return (f"{_shown(node, source)}: pickle.loads takes bytes; data pickled by Python 2 "
                "may need encoding='latin1'")
    return None


def _calls(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name


def _shown(node: ast.AST, source: str, limit: int = 40) -> str:
    text = " ".join((ast.get_source_segment(source, node) or "").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- the command
_DESCRIPTION = """\
Convert scripts written for the old DistrComp library (Python 2: print statements, cPickle,
raw_input, ...) to Python 3, with lib2to3's fixers (from fissix: pip install
'distrcomp[legacy]'). `import message as ms` keeps working: distrcomp's drop-in message module
replaces the old one. Prints a unified diff on stdout and changes nothing, unless --write. On
stderr, one line per construct no fixer can decide, with its line in the converted script:
/ between integers, input(), str against bytes on sockets and struct, pickle.loads.

The old library's own message.py is recognised and left alone: distrcomp does not need it.
Exit status: 0 when every file was converted (or had nothing to convert), 2 if any cannot be
read or parsed, before anything is written."""


def add_parser(commands, formatter) -> None:
    """Add ``migrate`` to the ``distrcomp`` command's subparsers."""
    parser = commands.add_parser(
        "migrate", help="convert old DistrComp scripts from Python 2 to Python 3",
        description=_DESCRIPTION, formatter_class=formatter,
        usage="distrcomp migrate [--write] FILE [FILE...]",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="Python 2 script to convert")
    parser.add_argument("-w", "--write", action="store_true",
                        help="write the converted script over FILE, keeping the original as "
                             "FILE.orig (refused if FILE.orig exists)")


def run_migrate(args) -> int:
    """``distrcomp migrate``: convert ``args.files``; print diffs, or write with ``--write``.

    Every file is read and converted before anything is printed or written, so that a file
    that cannot be converted leaves all of them as they were. Raises MigrateError for such a
    file, and, with ``--write``, when a ``FILE.orig`` already exists.
    """
    from .launcher.script import is_old_message

    work = []
    seen = set()
    for path in args.files:
        if os.path.realpath(path) in seen:
            continue  # written twice, the second time would keep the converted one as .orig
        seen.add(os.path.realpath(path))
        if is_old_message(path):
            sys.stderr.write(f"{path}: the old DistrComp library's message module, left as it "
                             "is: distrcomp uses its drop-in message module instead\n")
            continue
        text, encoding = _read(path)
        migration = migrate(text, path)
        if args.write and migration.changed and os.path.exists(path + ".orig"):
            raise MigrateError(f"{path}.orig exists: move it away first (--write keeps the "
                               "original there)")
        work.append((path, encoding, migration))
    out = sys.stdout
    for path, encoding, migration in work:
        if not migration.changed:
            sys.stderr.write(f"{path}: nothing to convert\n")
        elif args.write:
            os.replace(path, path + ".orig")
            _write(path, path + ".orig", migration.source, encoding)
            sys.stderr.write(f"{path}: converted (the original is {path}.orig)\n")
        else:
            out.writelines(difflib.unified_diff(
                migration.old.splitlines(keepends=True), migration.source.splitlines(keepends=True),
                fromfile=path, tofile=path,
            ))
        for line, text in migration.notes:
            sys.stderr.write(f"{path}:{line}: check: {text}\n")
    return 0


def _read(path: str) -> tuple[str, str]:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise MigrateError(f"{path}: cannot read: {error.strerror or error}") from None
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        return data.decode(encoding), encoding
    except (SyntaxError, LookupError, UnicodeDecodeError) as error:
        raise MigrateError(f"{path}: cannot decode: {error}") from None


def _write(path: str, original: str, text: str, encoding: str) -> None:
    """Write ``text`` to ``path`` with the original's permissions (it was moved to
    ``original``)."""
    with open(path, "w", encoding=encoding, newline="") as handle:
        handle.write(text)
    os.chmod(path, os.stat(original).st_mode & 0o7777)

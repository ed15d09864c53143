"""The old DistrComp tool's ``master.py``, for ``distrcomp run --legacy-master``.

:func:`read_master`: the ``files``, ``commands`` and ``timelimit`` constants of an old
``master.py``, read *without executing it*: the file is parsed, and only literals
(``ast.literal_eval``) are accepted, with names bound once to a literal. (The checks on old
scripts and the drop-in ``message`` module's path are :mod:`.script`.)

Everything here is pure: files in, values or messages out. Nothing initialises MPI.
"""

from __future__ import annotations

import ast
import copy
import io
import math
import os
import tokenize
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple, Union

from ..errors import DistrCompError
from .script import syntax_reason

__all__ = ["LegacyMaster", "LegacyMasterError", "read_master"]

PathLike = Union[str, "os.PathLike[str]"]

_NAMES = ("files", "commands", "timelimit")

# Methods that change a list in place: a master.py calling one of them on a constant means the
# value the old tool used is not the literal we read.
_MUTATORS = frozenset(
    ("append", "extend", "insert", "remove", "pop", "clear", "sort", "reverse", "__setitem__")
)


# --------------------------------------------------------------------------- master.py
class LegacyMaster(NamedTuple):
    """The settings of an old ``master.py``.

    ``files``: files to ship to every node (default ``[]`` when master.py has none).
    ``commands``: shell commands run in order on every node (required, at least one).
    ``timelimit``: seconds allowed per command; None when master.py sets none (no limit).
    """

    files: list[str]
    commands: list[str]
    timelimit: float | None


class LegacyMasterError(DistrCompError, ValueError):
    """master.py cannot be read as constants; the message names the file and line.

    ``str(error)`` is ``"master.py:7: commands must be a list of strings, got a function call
    (get_commands())"``. ``line`` is 1-based, 0 when the problem is not on one line (as for
    the launcher's PeersFileError).
    """

    def __init__(self, path: PathLike, line: int, reason: str) -> None:
        where = f"{os.fspath(path)}:{line}" if line > 0 else os.fspath(path)
        super().__init__(f"{where}: {reason}")
        self.path = os.fspath(path)
        self.line = line
        self.reason = reason


def read_master(path: PathLike) -> LegacyMaster:
    """Read ``files``, ``commands`` and ``timelimit`` from an old ``master.py``, never running it.

    The file is parsed, not executed. Each constant must be assigned a literal at top level:
    ``files`` a list (or tuple) of strings, ``commands`` a non-empty list of non-empty strings,
    ``timelimit`` a positive number of seconds. If a name is assigned several times at top
    level, the last assignment counts, as in Python. Inside these literals a name may stand
    for a literal when it is assigned exactly once in the module, at top level, by a plain
    ``name = <literal>`` (the old master.py's ``my_source_code = "myprogram.py"`` then
    ``files = [my_source_code, "message.py"]``); any other name is an error. The rest of the file (the old tool's own
    code, imports, functions) is ignored, unless it visibly rebinds or changes one of the three
    names: at module level inside an ``if``, a loop, ``with`` or ``try``, by ``+=``,
    ``.append()``, item assignment, ``del``, an import, a ``def``; or in a function that
    declares it ``global``. Then the value the old tool used is unknown, and that is an error.

    Missing ``files`` means ``[]``; missing ``timelimit`` means None (no limit); missing
    ``commands`` is an error, since there would be nothing to run.

    A master.py that Python 3 cannot parse (Python 2 code) is still read: the top-level lines
    assigning the three names are parsed on their own.

    Raises LegacyMasterError, naming the file, the line and what is wrong, for anything else:
    a function call, a name, an f-string, an expression, a wrong type; and when the file cannot
    be read or decoded.
    """
    text = _read_text(path)
    try:
        tree = ast.parse(text, filename=os.fspath(path))
    except SyntaxError as error:
        statements = _statements_despite(error, text, path)
    except (RecursionError, MemoryError):
        raise LegacyMasterError(path, 0, "is too deeply nested to be read") from None
    else:
        _check_module_scope(tree, text, path)
        statements = tree.body
    constants = _constants(statements)
    values = _assigned_literals(statements, constants, text, path)
    return LegacyMaster(
        files=_as_files(values.get("files"), path),
        commands=_as_commands(values.get("commands"), path),
        timelimit=_as_timelimit(values.get("timelimit"), path),
    )


def _read_text(path: PathLike) -> str:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise LegacyMasterError(path, 0, f"cannot read: {error.strerror or error}") from error
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        return data.decode(encoding)
    except (SyntaxError, LookupError, UnicodeDecodeError) as error:
        raise LegacyMasterError(path, 0, f"cannot decode: {error}") from error


def _assigned_literals(
    statements: list[ast.stmt], constants: dict[str, ast.expr], text: str, path: PathLike
) -> dict[str, tuple[Any, int]]:
    """``{name: (value, line)}`` for the top-level literal assignments of the three names."""
    found: dict[str, tuple[ast.expr, int]] = {}
    for statement in statements:
        for name, node in _bindings(statement, path):
            found[name] = (node, statement.lineno)  # the last assignment wins, as in Python
    return {
        name: (_literal(name, _resolved(node, constants), line, text, path), line)
        for name, (node, line) in found.items()
    }


def _constants(statements: list[ast.stmt]) -> dict[str, ast.expr]:
    """``{name: literal node}`` for each other top-level name bound exactly once in
    ``statements`` (the whole module, or what could be read of a Python 2 one), by a plain
    ``name = <literal>``, as the old master.py's ``my_source_code = "myprogram.py"``."""
    bindings: dict[str, int] = {}
    for node in _module_scope(statements):
        for name in _bound_names(node):
            bindings[name] = bindings.get(name, 0) + 1
    constants: dict[str, ast.expr] = {}
    for statement in statements:
        if not (isinstance(statement, ast.Assign) and len(statement.targets) == 1):
            continue
        target = statement.targets[0]
        if not isinstance(target, ast.Name) or target.id in _NAMES:
            continue
        if bindings.get(target.id) != 1:
            continue
        try:
            ast.literal_eval(statement.value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue
        constants[target.id] = statement.value
    return constants


def _module_scope(statements: list[ast.stmt]) -> Iterator[ast.AST]:
    """Every node of the module's own scope, and the ``global`` statements of inner scopes."""
    pending: list[ast.AST] = list(statements)
    while pending:
        node = pending.pop()
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            pending.extend(inner for inner in ast.walk(node) if isinstance(inner, ast.Global))
            continue
        pending.extend(ast.iter_child_nodes(node))


def _bound_names(node: ast.AST) -> Iterator[str]:
    """The module-level names ``node`` binds (or deletes, or declares global)."""
    if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
        yield node.id
    elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        yield node.name
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
        for alias in node.names:
            yield alias.asname or alias.name.split(".")[0]
    elif isinstance(node, ast.ExceptHandler) and node.name:
        yield node.name
    elif isinstance(node, ast.Global):
        yield from node.names


def _resolved(node: ast.expr, constants: dict[str, ast.expr]) -> ast.expr:
    """``node`` with each name in ``constants`` replaced by the literal it is bound to."""

    class Resolve(ast.NodeTransformer):
        def visit_Name(self, name: ast.Name) -> ast.expr:
            literal = constants.get(name.id)
            return name if literal is None else ast.copy_location(copy.deepcopy(literal), name)

    return Resolve().visit(copy.deepcopy(node)) if constants else node


def _bindings(statement: ast.stmt, path: PathLike) -> Iterator[tuple[str, ast.expr]]:
    """The (name, value node) pairs a top-level statement binds among the three names."""
    if isinstance(statement, ast.Assign):
        for target in statement.targets:
            if isinstance(target, ast.Name) and target.id in _NAMES:
                yield target.id, statement.value
            elif isinstance(target, (ast.Tuple, ast.List)):
                for name in _names_in(target):
                    raise LegacyMasterError(
                        path, statement.lineno,
                        f"{name} is assigned by unpacking; write {name} = ... on a line of its own",
                    )
    elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
        target = statement.target
        if isinstance(target, ast.Name) and target.id in _NAMES:
            yield target.id, statement.value
    elif isinstance(statement, ast.AugAssign):
        target = statement.target
        if isinstance(target, ast.Name) and target.id in _NAMES:
            raise LegacyMasterError(
                path, statement.lineno,
                f"{target.id} is changed with an augmented assignment; only a plain "
                f"{target.id} = <literal> is read: put the whole value in one literal",
            )


def _names_in(target: ast.expr) -> Iterator[str]:
    for node in ast.walk(target):
        if isinstance(node, ast.Name) and node.id in _NAMES:
            yield node.id


def _literal(name: str, node: ast.expr, line: int, text: str, path: PathLike) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        pass
    culprit = _first_non_literal(node)
    where = culprit.lineno if culprit is not None else line
    kind = _describe(culprit if culprit is not None else node, text)
    if culprit is not None and culprit is not node:
        kind = f"{_article(node)} containing {kind}"
    raise LegacyMasterError(
        path, where,
        f"{name} must be {_EXPECTED[name]}, got {kind}; {Path(path).name} is read without "
        "running it, so only literals count, and names assigned a literal once at top level",
    )


_EXPECTED = {
    "files": "a list of strings (file names)",
    "commands": "a list of strings (shell commands)",
    "timelimit": "a number of seconds",
}

_LITERAL_NODES = (ast.Constant, ast.List, ast.Tuple, ast.Set, ast.Dict)


def _first_non_literal(node: ast.expr) -> ast.expr | None:
    """The outermost-first node that ``literal_eval`` refuses, if one can be singled out."""
    for child in ast.walk(node):
        if isinstance(child, ast.UnaryOp) and isinstance(child.operand, ast.Constant):
            continue  # a negative number: literal_eval's own verdict stands for it
        if isinstance(child, ast.expr) and not isinstance(child, _LITERAL_NODES):
            return child
    return None


_KINDS = {
    ast.Call: "a function call",
    ast.Name: "a name",
    ast.Attribute: "an attribute",
    ast.JoinedStr: "an f-string",
    ast.BinOp: "an expression",
    ast.BoolOp: "an expression",
    ast.Compare: "a comparison",
    ast.UnaryOp: "an expression",
    ast.IfExp: "a conditional expression",
    ast.Lambda: "a lambda",
    ast.ListComp: "a list comprehension",
    ast.SetComp: "a set comprehension",
    ast.DictComp: "a dict comprehension",
    ast.GeneratorExp: "a generator expression",
    ast.Subscript: "a subscript",
    ast.Starred: "a starred expression",
    ast.NamedExpr: "an assignment expression",
}


def _describe(node: ast.expr, text: str) -> str:
    kind = _KINDS.get(type(node), "an expression")
    return f"{kind} ({_snippet(node, text)})"


def _article(node: ast.expr) -> str:
    return {ast.List: "a list", ast.Tuple: "a tuple", ast.Set: "a set", ast.Dict: "a dict"}.get(
        type(node), "a value"
    )


def _snippet(node: ast.AST, text: str, limit: int = 50) -> str:
    segment = ast.get_source_segment(text, node) or ast.unparse(node)
    segment = " ".join(segment.split())
    return segment if len(segment) <= limit else segment[: limit - 3] + "..."


def _describe_value(value: Any) -> str:
    shown = repr(value)
    if len(shown) > 50:
        shown = shown[:47] + "..."
    return f"{_a(type(value).__name__)} ({shown})"


def _a(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def _as_files(entry: tuple[Any, int] | None, path: PathLike) -> list[str]:
    if entry is None:
        return []
    value, line = entry
    return _strings("files", value, line, path)


def _as_commands(entry: tuple[Any, int] | None, path: PathLike) -> list[str]:
    if entry is None:
        raise LegacyMasterError(
            path, 0, "defines no commands; expected a line like commands = ['python job.py']"
        )
    value, line = entry
    commands = _strings("commands", value, line, path)
    if not commands:
        raise LegacyMasterError(path, line, "commands is empty: there is nothing to run")
    for index, command in enumerate(commands):
        if not command.strip():
            raise LegacyMasterError(path, line, f"commands[{index}] is an empty command")
    return commands


def _strings(name: str, value: Any, line: int, path: PathLike) -> list[str]:
    if not isinstance(value, (list, tuple)):
        hint = f"; write {name} = [{value!r}]" if isinstance(value, str) else ""
        raise LegacyMasterError(
            path, line, f"{name} must be {_EXPECTED[name]}, got {_describe_value(value)}{hint}"
        )
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise LegacyMasterError(
                path, line,
                f"{name} must be {_EXPECTED[name]}, but {name}[{index}] is {_describe_value(item)}",
            )
    return list(value)


def _as_timelimit(entry: tuple[Any, int] | None, path: PathLike) -> float | None:
    if entry is None:
        return None
    value, line = entry
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LegacyMasterError(
            path, line, f"timelimit must be a number of seconds, got {_describe_value(value)}"
        )
    if not (math.isfinite(value) and value > 0):
        raise LegacyMasterError(
            path, line, f"timelimit must be a positive number of seconds, got {value!r}"
        )
    return float(value)


# ------------------------------------------------------------- module-scope rebinding checks
_BLOCKS = {
    ast.If: "an if statement",
    ast.For: "a for loop",
    ast.AsyncFor: "a for loop",
    ast.While: "a while loop",
    ast.With: "a with statement",
    ast.AsyncWith: "a with statement",
    ast.Try: "a try statement",
}
if hasattr(ast, "Match"):  # Python >= 3.10
    _BLOCKS[ast.Match] = "a match statement"


def _check_module_scope(tree: ast.Module, text: str, path: PathLike) -> None:
    """Raise if code at module level, other than top-level assignments, binds or changes a name.

    Function and class bodies are their own scopes and are not looked at: a function's local
    ``files`` is not the constant.
    """
    for statement in tree.body:
        if isinstance(statement, (ast.Assign, ast.AnnAssign)):
            # A plain name target is what _bindings reads; any other target (commands[0] = ...,
            # unpacking) and the value (a walrus, a mutating call) are checked.
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            for part in [*targets, statement.value]:
                if part is not None and not isinstance(part, ast.Name):
                    _check_node(part, None, text, path)
            continue
        _check_node(statement, None, text, path)


def _check_node(node: ast.AST, block: str | None, text: str, path: PathLike) -> None:
    problem = _rebinding(node, block, text)
    if problem is not None:
        name, how = problem
        raise LegacyMasterError(
            path, getattr(node, "lineno", 0),
            f"{name} is {how}; {Path(path).name} may only assign it a literal at top level "
            f"(e.g. {name} = [...]), since it is read without running the file",
        )
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
        # A scope of its own: only a ``global`` declaration there reaches the constants.
        for inner_node in ast.walk(node):
            if isinstance(inner_node, ast.Global):
                for name in inner_node.names:
                    if name in _NAMES:
                        raise LegacyMasterError(
                            path, inner_node.lineno,
                            f"{name} is declared global in {_scope_name(node)}, which may "
                            f"change it when the old tool runs; {Path(path).name} is read "
                            "without running it, so only a literal at top level counts",
                        )
        return
    inner = _BLOCKS.get(type(node), block)
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.comprehension):
            # Its target lives in the comprehension's own scope; its iterables do not.
            for part in (child.iter, *child.ifs):
                _check_node(part, inner, text, path)
            continue
        _check_node(child, inner, text, path)


def _scope_name(node: ast.AST) -> str:
    if isinstance(node, ast.Lambda):
        return "a lambda"
    kind = "class" if isinstance(node, ast.ClassDef) else "function"
    return f"{kind} {node.name}()" if kind == "function" else f"class {node.name}"


def _rebinding(node: ast.AST, block: str | None, text: str) -> tuple[str, str] | None:
    """``(name, how)`` if ``node`` itself binds, deletes or changes one of the three names."""
    if isinstance(node, ast.Name) and node.id in _NAMES:
        if isinstance(node.ctx, ast.Store):
            return node.id, f"assigned inside {block}" if block else "assigned by unpacking"
        if isinstance(node.ctx, ast.Del):
            return node.id, "deleted with del"
    target = getattr(node, "target", None)
    if isinstance(node, ast.AugAssign) and isinstance(target, ast.Name) and target.id in _NAMES:
        return target.id, "changed with an augmented assignment"
    if isinstance(node, ast.NamedExpr) and node.target.id in _NAMES:
        return node.target.id, "assigned with :="
    scopes = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    if isinstance(node, scopes) and node.name in _NAMES:
        return node.name, "defined by a def or class statement"
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        for alias in node.names:
            bound = alias.asname or alias.name.split(".")[0]
            if bound in _NAMES:
                return bound, "bound by an import"
    if isinstance(node, ast.ExceptHandler) and node.name in _NAMES:
        return node.name, "bound by an except clause"
    if isinstance(node, (ast.Subscript, ast.Attribute)) and isinstance(node.ctx, (ast.Store, ast.Del)):
        base = node.value
        if isinstance(base, ast.Name) and base.id in _NAMES:
            return base.id, f"changed by {_snippet(node, text)} = ..."
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        base = node.func.value
        if isinstance(base, ast.Name) and base.id in _NAMES and node.func.attr in _MUTATORS:
            return base.id, f"changed by {_snippet(node, text)}"
    return None


# -------------------------------------------------------- reading a master.py Python 3 rejects
def _statements_despite(error: SyntaxError, text: str, path: PathLike) -> list[ast.stmt]:
    """Parse, one by one, the top-level statements that start with a name.

    For a master.py that is Python 2 code (``print "..."``), which ``ast`` cannot parse as a
    whole. The tokenizer still reads such a file; every module-level statement (not inside a
    block) that begins with a name is cut out and parsed alone: those that assign ``files``,
    ``commands`` or ``timelimit`` must parse, the others (``print "..."``, the first line of a
    block) are skipped when they do not. Blocks cannot be checked for rebinding here, since
    they are not parsed.
    """
    lines = text.splitlines(keepends=True)
    statements: list[ast.stmt] = []
    found = False
    for (first, start_col), (last, end_col), name in _top_level_spans(text):
        chunk = "".join(lines[first - 1 : last])
        cut = len(chunk) - len(lines[last - 1]) + end_col
        try:
            module = ast.parse(chunk[start_col:cut])
        except SyntaxError as inner:
            if name not in _NAMES:
                continue
            line = first + (inner.lineno or 1) - 1
            # No "convert the print statements" here: the rest of the file may stay Python 2.
            raise LegacyMasterError(path, line, syntax_reason(inner, "")) from None
        _shift(module, first - 1, start_col)
        _check_module_scope(module, text, path)
        statements.extend(module.body)
        found = found or name in _NAMES
    if not found:
        raise LegacyMasterError(
            path, error.lineno or 0,
            f"{syntax_reason(error, text)}; no top-level files/commands/timelimit "
            "assignment could be read around it",
        )
    return statements


def _shift(module: ast.Module, lines: int, first_line_cols: int) -> None:
    """Move a snippet's positions to where it sits in the whole file (for error messages)."""
    for node in ast.walk(module):
        if getattr(node, "lineno", None) == 1:
            node.col_offset += first_line_cols
        if getattr(node, "end_lineno", None) == 1 and node.end_col_offset is not None:
            node.end_col_offset += first_line_cols
    ast.increment_lineno(module, lines)


def _top_level_spans(text: str) -> Iterator[tuple[tuple[int, int], tuple[int, int], str]]:
    """``((line, col), (end line, end col), first name)`` of each top-level statement that
    starts with a name (a keyword too: ``print``, ``if``)."""
    depth = 0
    start: tuple[int, int] | None = None
    first = ""
    at_statement_start = True
    end = (0, 0)
    tokens = tokenize.generate_tokens(io.StringIO(text).readline)
    try:
        for token in tokens:
            kind = token.type
            if kind == tokenize.INDENT:
                depth += 1
                continue
            if kind == tokenize.DEDENT:
                depth -= 1
                continue
            if kind in (tokenize.NL, tokenize.COMMENT):
                continue
            ends = kind in (tokenize.NEWLINE, tokenize.ENDMARKER) or (
                kind == tokenize.OP and token.string == ";"
            )
            if ends:
                if start is not None:
                    yield start, end, first
                start = None
                at_statement_start = True
                continue
            if kind == tokenize.NAME and at_statement_start and depth == 0:
                start, first = token.start, token.string
            at_statement_start = False
            end = token.end
    except (tokenize.TokenError, SyntaxError):
        return  # the statements before the point the tokenizer gave up are still good

"""The names of Cython's ``cython`` module that ``distrcomp/p2p.py`` uses, for running it as plain
Python (Cython is needed only to build the compiled engine).

Cython reads these names when it compiles p2p.py, so the compiled build never imports this; the
plain-Python build always does, even where Cython is installed: Cython's own pure-Python module
checks types in ``cast``, isinstance calls that slow every message in plain Python. Here every
C type is a placeholder, every declaration is its value and every decorator changes nothing, as
in Cython's own pure-Python mode.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

compiled = False


class _CType:
    """A C type's name (``cython.int``); indexed, a memoryview type (``cython.longlong[:]``)."""

    def __getitem__(self, index: Any) -> _CType:
        return self


int = long = longlong = double = bint = Py_ssize_t = p_void = _CType()


def declare(ctype: Any = None, value: Any = None, **visibility: Any) -> Any:
    return value


def cast(ctype: Any, value: Any) -> Any:
    return value


def _unchanged(function: F) -> F:
    return function


cfunc = inline = cclass = _unchanged


def locals(**types: Any) -> Callable[[F], F]:
    return _unchanged


def annotation_typing(enabled: bool) -> Callable[[F], F]:
    return _unchanged

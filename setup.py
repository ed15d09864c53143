"""The optional compiled hot path (distrcomp/_hotpath.c); everything else is in pyproject.toml.

``optional=True``: where no C compiler is available the install still succeeds, and distrcomp
runs its pure-Python engine (``distrcomp.p2p.compiled()`` tells which one a process uses).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("distrcomp._hotpath", ["distrcomp/_hotpath.c"], optional=True)])

"""``python -m distrcomp`` is the ``distrcomp`` command."""

from .launcher.cli import console

console()

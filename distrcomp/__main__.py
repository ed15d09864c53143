"""``python -m distrcomp`` is the ``distrcomp`` command."""

import sys

from .launcher.cli import main

sys.exit(main())

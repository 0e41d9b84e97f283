"""``python -m text3d.cli``: the ``text3d`` command."""

import sys

from text3d.cli import main

sys.exit(main())

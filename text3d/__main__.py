"""`python -m text3d ...` = the `text3d` command."""

import sys

from .cli import main

sys.exit(main())

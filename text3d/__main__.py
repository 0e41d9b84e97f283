"""`python -m text3d ...` = the `text3d` command."""

import sys

from text3d.cli import main

sys.exit(main())

"""``python -m lrtune``: the command line."""

import sys

from lrtune.cli import main

sys.exit(main())

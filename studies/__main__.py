"""``python -m studies``: see studies/cli.py."""

import sys

from studies.cli import main

sys.exit(main())

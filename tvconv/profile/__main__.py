"""``python -m tvconv.profile``: the command line of ``tvconv.profile.cli``."""

import sys

from tvconv.profile.cli import main

sys.exit(main())

"""``python -m tvconv.profile``: the command line of ``tvconv.profile.cli``."""

from tvconv.console import exit_with
from tvconv.profile.cli import main

exit_with(main)

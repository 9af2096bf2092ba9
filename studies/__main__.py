"""``python -m studies``: see studies/cli.py."""

from studies.cli import main
from tvconv.console import exit_with

exit_with(main)

"""``python -m studies``: see studies/cli.py. A closed pipe (``--dry-run | head``) ends it
quietly, as it ends other command-line tools."""

import os
import sys

from studies.cli import main

try:
    code = main()
    sys.stdout.flush()
except BrokenPipeError:
    # the reader is gone: send what is left to /dev/null so the exit's flush cannot fail again
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    code = 141  # 128 + SIGPIPE, as a tool killed by the closed pipe would report
sys.exit(code)

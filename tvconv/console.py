"""How every ``python -m`` command of the project ends: ``exit_with(main)`` runs the command and
exits with its code; a reader that closes the pipe early (``python -m analysis tradeoff | head``)
ends it quietly with 141 (128 + SIGPIPE), as it ends other command-line tools, with no traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import NoReturn


def exit_with(main: Callable[[], int | None]) -> NoReturn:
    """Run ``main`` and exit with what it returns (None: 0); a closed stdout pipe exits 141."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader is gone: send what is left to /dev/null so the exit's flush cannot fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 141
    sys.exit(code)

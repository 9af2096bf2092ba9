"""How every ``python -m`` command of the project ends: ``exit_with(main)`` runs the command and
exits with its code; a reader that closes the pipe early (``python -m analysis tradeoff | head``)
ends it quietly with 141 (128 + SIGPIPE), as it ends other command-line tools, with no traceback.
``output_problem(path, flag)`` checks an output file's path before a command does its work; the
``*_arg`` functions are argparse types that refuse a bad number with what was expected.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
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


def output_problem(path: Path, flag: str) -> str | None:
    """Why ``path`` cannot take the file a command will write (None when it can; its folder is
    created): checked before the command's work, so a bad ``--out`` costs nothing."""
    if path.is_dir():
        return f"{flag} {path}: is a folder; expected a file path"
    if path.parent.exists() and not path.parent.is_dir():
        return f"{flag} {path}: {path.parent} is not a folder"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"{flag} {path}: cannot create its folder ({error.strerror})"
    try:  # a real file, not os.access: root passes that anywhere, /proc included
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as error:
        return f"{flag} {path}: its folder cannot take a file ({error.strerror})"
    return None


def _int_at_least(text: str, low: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int_arg(text: str) -> int:
    return _int_at_least(text, 1, "a positive integer")


def nonnegative_int_arg(text: str) -> int:
    return _int_at_least(text, 0, "an integer >= 0")


def positive_float_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value

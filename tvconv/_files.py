"""Atomic file writes, one way for every file the suite writes whole (run records, checkpoints,
cached arrays, ``--out`` files): a temp file beside the target, fsynced, then renamed over it, so
a killed process never leaves half a file; the file gets the permissions of any file the user
creates (``0o666`` less the umask), not the temp file's ``0o600``, so a shared store stays
readable by its group."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

_UMASK = os.umask(0)
os.umask(_UMASK)


def write_atomically(path: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Create ``path`` (and its folder) from ``write(handle)`` on a binary temp file beside it;
    the temp file goes away if ``write`` raises. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    ) as handle:
        try:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        except BaseException:
            handle.close()
            os.unlink(handle.name)
            raise
    os.chmod(handle.name, 0o666 & ~_UMASK)
    os.replace(handle.name, path)
    return path


def write_text_atomically(path: Path, text: str) -> Path:
    """``write_atomically`` of UTF-8 text."""
    return write_atomically(path, lambda handle: handle.write(text.encode()))

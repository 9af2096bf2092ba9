"""``exclusive``: the cross-process lock under which one process builds what others wait for (the
C++ kernel, ``tvconv.kernels``; a decoded training tree, ``tvconv.data.faces``).

An exclusive ``flock`` on a lock file: the kernel drops it when its holder dies, so it is never
stale. The holder writes its pid and host into the file; a waiter says once, on stderr, whom it
waits for, and with ``wait_s`` gives up with a RuntimeError naming the lock and its holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "another process"
    except OSError:
        return "another process"


@contextlib.contextmanager
def exclusive(
    path: Path, what: str, wait_s: float | None = None, poll_s: float = 0.5, advice: str = ""
) -> Iterator[None]:
    """Hold ``path`` (``what``: whose lock it is, for the messages), waiting at most ``wait_s``
    (None: as long as it takes); ``advice`` ends the timeout's message."""
    descriptor = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        deadline = None if wait_s is None else time.monotonic() + wait_s
        announced = False
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() > deadline:
                    raise RuntimeError(
                        f"waited {wait_s:.0f} s for {what} lock {path} (held by "
                        f"{_holder(path)}){'; ' + advice if advice else ''}"
                    ) from None
                if not announced:
                    print(
                        f"waiting for {_holder(path)} to release {what} lock {path}",
                        file=sys.stderr,
                        flush=True,
                    )
                    announced = True
                time.sleep(poll_s)
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"pid {os.getpid()} on {platform.node()}".encode(), 0)
        yield
    finally:
        os.close(descriptor)  # releases the flock

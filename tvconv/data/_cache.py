"""On-disk cache for generated and decoded data, so repeated runs skip that work.

Location: ``$TVCONV_CACHE`` (default ``~/.cache/tvconv-ablations``); ``TVCONV_CACHE=off``
disables it. Entries are keyed by a hash of the generator version and its configuration, written
atomically (temp file + rename) and loaded with ``torch.load(weights_only=True)``; an unreadable
entry is regenerated.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch

from tvconv._files import write_atomically

DEFAULT_CACHE = "~/.cache/tvconv-ablations"


def cache_dir() -> Path | None:
    value = os.environ.get("TVCONV_CACHE", DEFAULT_CACHE)
    return None if value.lower() in ("", "off", "0", "none") else Path(value).expanduser()


def cache_key(kind: str, version: int, config: dict) -> str:
    payload = json.dumps({"kind": kind, "version": version, "config": config}, sort_keys=True)
    return f"{kind}-{hashlib.sha256(payload.encode()).hexdigest()[:16]}"


def cached(key: str, build: Callable[[], dict]) -> dict:
    """``build()`` (a dict of tensors and plain values), through the cache entry ``key``."""
    directory = cache_dir()
    if directory is None:
        return build()
    path = directory / f"{key}.pt"
    if path.exists():
        try:
            return torch.load(path, weights_only=True)
        except Exception:  # a truncated or foreign file: regenerate it
            path.unlink(missing_ok=True)
    value = build()
    write_atomically(path, lambda handle: torch.save(value, handle))
    return value

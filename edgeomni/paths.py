"""Where EdgeOmni keeps what it builds: bundles and generated media, under one cache root."""

from __future__ import annotations

import os
from pathlib import Path

BUNDLE_ENV = "EDGEOMNI_BUNDLE"
CACHE_ENV = "EDGEOMNI_CACHE"


def cache_root() -> Path:
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgeomni"


def default_bundle_dir() -> Path:
    """The bundle `run` uses when no --bundle is given: $EDGEOMNI_BUNDLE, else the cache's default."""
    explicit = os.environ.get(BUNDLE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    return cache_root() / "bundles" / "default"


def media_dir() -> Path:
    return cache_root() / "media"

"""Shared fixtures. The default bundle is built once per session (or reused from the cache) and shared."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mqtt_broker import mqtt_broker  # noqa: F401 - private Mosquitto fixture factory (issue 8 sync/OTA tests)


@pytest.fixture(scope="session")
def default_bundle() -> Path:
    """The default bundle at edgeomni.paths.default_bundle_dir() (EDGEOMNI_BUNDLE / EDGEOMNI_CACHE honoured).

    Built on first use (about 25 s on 2 cores) and reused afterwards; tests must not modify it, use
    tmp_bundle_copy for that.
    """
    from edgeomni.export import build_default_bundle

    return build_default_bundle()


@pytest.fixture
def tmp_bundle_copy(default_bundle: Path, tmp_path: Path) -> Path:
    """A private full copy (no hard links, so corrupting it cannot touch the shared bundle)."""
    target = tmp_path / "bundle"
    shutil.copytree(default_bundle, target, copy_function=shutil.copyfile)
    return target

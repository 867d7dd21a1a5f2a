"""The one way an export writes a bundle: its files staged in a sibling directory, the manifest written and
verified there, then one rename into place. The bundle path holds a whole bundle or none, and an earlier bundle
there is replaced only by one that verifies.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgeomni.bundle.manifest import Component, Manifest
from edgeomni.bundle.verify import verify_bundle
from edgeomni.export.recipe import Recipe


def new_manifest(name: str, version: str, components: list[Component], calibration: dict[str, Any],
                 notes: str) -> Manifest:
    return Manifest(name=name, version=version, created=datetime.now(UTC).isoformat(timespec="seconds"),
                    components={c.name: c for c in components}, calibration=calibration, notes=notes)


def recipe_manifest(recipe: Recipe, components: list[Component], calibration: dict[str, Any],
                    notes: str = "") -> Manifest:
    return new_manifest(recipe.name, recipe.version, components, calibration,
                        f"Built by `edgeomni export` from recipe {recipe.name}. {notes}".strip())


def publish_bundle(staging: Path, bundle: Path, manifest: Manifest) -> None:
    """Manifest into `staging`, verify it, then swap it into `bundle` (a sibling: the rename is atomic)."""
    manifest.save(staging)
    verify_bundle(staging)
    old = None
    if bundle.exists():
        old = bundle.parent / f".{bundle.name}.old-{os.getpid()}"
        bundle.rename(old)
    staging.rename(bundle)  # readers see the old bundle or the new one, never a mix
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

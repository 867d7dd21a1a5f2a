"""`trainer:DIR` data sources: the sets `edgeomni trainer build-sets --out DIR` wrote from the devices' hard
examples, grouped by the device that recorded them (the strata), so one busy camera or microphone does not
crowd out the rest of the fleet.

Layout: DIR/<purpose>/manifest.json for audio (calibration, distillation) and DIR/images/<purpose>/
manifest.json for frames (calibration, heldout, distillation); DIR may also be one set's own folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgeomni.errors import ExportError
from edgeomni.trainer.set_formats import AUDIO_SET_FORMAT, IMAGE_SET_FORMAT, set_subfolder

__all__ = ["AUDIO_SET_FORMAT", "IMAGE_SET_FORMAT", "trainer_set"]


def trainer_set(directory: Path, purpose: str, field: str,
                fmt: str = AUDIO_SET_FORMAT) -> tuple[dict[str, list[Path]], str]:
    """The files of one set, by device, and a line saying where they came from; a missing manifest, another
    format, a listed file that is gone or an empty set is refused, naming the recipe field."""
    subfolder = set_subfolder(fmt, purpose)
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        manifest_path = directory / subfolder / "manifest.json"
    if not manifest_path.is_file():
        raise ExportError(f"{field}: trainer:{directory}: no manifest.json there or in {subfolder}/ "
                          "(expected the output of `edgeomni trainer build-sets --out DIR`)")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != fmt:
        raise ExportError(f"{field}: {manifest_path}: format {manifest.get('format')!r}, expected {fmt!r}")
    strata: dict[str, list[Path]] = {}
    for entry in manifest.get("files", []):
        path = manifest_path.parent / entry["file"]
        if not path.is_file():
            raise ExportError(f"{field}: {manifest_path}: lists {entry['file']}, which is missing")
        strata.setdefault(str(entry.get("device") or "?"), []).append(path)
    if not strata:
        raise ExportError(f"{field}: {manifest_path}: the set is empty; an empty {purpose} set cannot be used "
                          "(more hard examples, or other build-sets fractions)")
    return strata, f"trainer set {manifest_path.parent}"

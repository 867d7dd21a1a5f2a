"""Generated slide sets with known text, for OCR calibration and the held-out accuracy gate.

Calibration and held-out slides are drawn from disjoint vocabularies (words, number ranges and punctuation
differ), so the gate measures text the calibrator never saw; `check_disjoint` proves it for every set.
Slides are stratified by template x resolution (equal shares, seeded), rendered with the fonts installed
here (DejaVu, Liberation), in several colour schemes, and some on real scikit-image photos with a text box.
The images are returned as the runtime sees them (RGB uint8 frames) with a manifest; a folder of images
(sub-folders = strata) is accepted instead, with its ground truth unknown.

Pillow and scikit-image are imported inside the functions: export-time only, never on the runtime path.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeomni.datasets.media_sets import IMAGE_SUFFIXES, folder_strata, stratified
from edgeomni.errors import ExportError

RESOLUTIONS = ((640, 360), (960, 540), (1280, 720), (1920, 1080))
TEMPLATES = ("title", "title-subtitle", "photo-box")
FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/truetype/liberation"))
FONT_FILES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "LiberationSans-Regular.ttf",
              "LiberationSans-Bold.ttf", "LiberationSerif-Regular.ttf")
# (background, title colour, subtitle colour): dark and light schemes, as real decks use both.
SCHEMES = (((18, 28, 56), (255, 255, 255), (190, 200, 225)), ((250, 250, 248), (20, 20, 20), (70, 70, 90)),
           ((10, 60, 40), (240, 240, 210), (200, 230, 200)), ((40, 40, 40), (255, 210, 80), (220, 220, 220)))

# Disjoint by construction (and checked): calibration words/numbers/punctuation never appear in held-out text.
VOCABULARY = {
    "calibration": {
        "words": ["Quarterly", "revenue", "Market", "overview", "Team", "goals", "Product", "roadmap", "Sales",
                  "pipeline", "Customer", "growth", "Budget", "review", "Launch", "plan", "Hiring", "update",
                  "Risk", "register", "Weekly", "status", "Design", "system", "Cloud", "costs"],
        "numbers": (10, 499),
        "punctuation": [":", "-"],
        "photos": ["rocket", "astronaut", "immunohistochemistry"],
    },
    "heldout": {
        "words": ["Annual", "summary", "Partner", "network", "Safety", "training", "Energy", "usage", "Office",
                  "move", "Support", "tickets", "Travel", "policy", "Vendor", "audit", "Project", "timeline",
                  "Board", "meeting", "Field", "report", "Service", "levels", "Storage", "options"],
        "numbers": (500, 999),
        "punctuation": [",", "/"],
        "photos": ["chelsea", "coffee"],
    },
}


@dataclass
class Slide:
    image: np.ndarray  # HxWx3 RGB uint8, what the runtime's TextReader receives
    lines: list[str]  # the text drawn, top to bottom (empty for a folder image: ground truth unknown)
    stratum: str
    name: str


@dataclass
class SlideSet:
    slides: list[Slide]
    manifest: dict[str, Any] = field(default_factory=dict)


def generated_slides(which: str, count: int, seed: int) -> SlideSet:
    """`count` slides of the `which` split ("calibration" or "heldout"), stratified by template x resolution."""
    if which not in VOCABULARY:
        raise ExportError(f"slides:{which}: expected slides:calibration or slides:heldout")
    fonts = _fonts()
    # Each split has its own stream of randomness, so calibration and held-out never share a draw.
    rng = np.random.default_rng([seed, list(VOCABULARY).index(which)])
    strata = [(t, r) for t in TEMPLATES for r in RESOLUTIONS]
    order = rng.permutation(len(strata))
    slides = []
    for i in range(count):
        template, size = strata[order[i % len(strata)]]
        slides.append(_make_slide(which, template, size, fonts, rng, i))
    manifest = {
        "source": f"slides:{which}", "seed": seed, "count": len(slides),
        "strata": _count_by(slides, lambda s: s.stratum),
        "fonts": sorted({f.name for f in fonts}),
        "vocabulary": {k: v for k, v in VOCABULARY[which].items()},
        "files": [{"file": s.name, "sha256": hashlib.sha256(s.image.tobytes()).hexdigest(), "lines": s.lines,
                   "size": [s.image.shape[1], s.image.shape[0]]} for s in slides],
    }
    return SlideSet(slides, manifest)


def folder_slides(folder: Path, count: int, seed: int, role: str) -> SlideSet:
    """Images from a folder (sub-folders are strata, equal shares), seeded; ground truth unknown."""
    if not folder.is_dir():
        raise ExportError(f"{role}.images: {folder} is not a directory (nor slides:calibration/slides:heldout)")
    strata = folder_strata(folder, IMAGE_SUFFIXES, f"{role}.images", "images")
    chosen = stratified(strata, count, np.random.default_rng(seed))
    slides = [Slide(_read_rgb(p, role), [], str(p.parent.relative_to(folder)), str(p.relative_to(folder)))
              for p in chosen]
    manifest = {"source": str(folder), "seed": seed, "count": len(slides),
                "strata": _count_by(slides, lambda s: s.stratum),
                "files": [{"file": s.name, "sha256": hashlib.sha256(s.image.tobytes()).hexdigest()} for s in slides]}
    return SlideSet(slides, manifest)


def load_slides(spec_images: str, count: int, seed: int, role: str, base: Path) -> SlideSet:
    """A recipe's DataSpec.images: `slides:calibration`, `slides:heldout`, or a folder of images."""
    if spec_images.startswith("slides:"):
        return generated_slides(spec_images.split(":", 1)[1], count, seed)
    folder = Path(spec_images).expanduser()
    return folder_slides(folder if folder.is_absolute() else base / folder, count, seed, role)


def check_disjoint(calibration: SlideSet, heldout: SlideSet) -> None:
    """Refuse a held-out set that shares an image or a word with the calibration set."""
    digests = {f["sha256"] for f in calibration.manifest["files"]}
    shared = [f["file"] for f in heldout.manifest["files"] if f["sha256"] in digests]
    if shared:
        raise ExportError(f"heldout.images: {len(shared)} image(s) also in the calibration set ({shared[:3]}); "
                          f"the gate must be measured on slides the calibrator never saw")
    words = {w for s in calibration.slides for line in s.lines for w in line.split()}
    common = sorted({w for s in heldout.slides for line in s.lines for w in line.split()} & words)
    if common:
        raise ExportError(f"heldout.images: held-out text shares {len(common)} word(s) with the calibration "
                          f"text ({common[:5]}); they must be disjoint")


def _make_slide(which: str, template: str, size: tuple[int, int], fonts: list[Path], rng: np.random.Generator,
                index: int) -> Slide:
    from PIL import Image, ImageDraw

    vocab = VOCABULARY[which]
    width, height = size
    background, title_colour, subtitle_colour = SCHEMES[int(rng.integers(len(SCHEMES)))]
    font_path = fonts[int(rng.integers(len(fonts)))]
    title = _phrase(vocab, rng, words=2, with_number=bool(rng.integers(2)))
    lines = [title]
    if template == "photo-box":
        canvas = _photo_background(vocab["photos"][int(rng.integers(len(vocab["photos"])))], size)
        # A solid caption box across the lower third, as lower-thirds and signs on photos have.
        box = (int(width * 0.08), int(height * 0.70), int(width * 0.92), int(height * 0.88))
        ImageDraw.Draw(canvas).rectangle(box, fill=background)
        _draw_fitted(canvas, title, font_path, (box[0] + box[2]) / 2, (box[1] + box[3]) / 2,
                     int((box[3] - box[1]) * 0.6), int((box[2] - box[0]) * 0.9), title_colour)
    else:
        canvas = Image.new("RGB", size, background)
        _draw_fitted(canvas, title, font_path, width / 2, height * 0.40, round(height * 0.12), int(width * 0.9),
                     title_colour)
        if template == "title-subtitle":
            subtitle = _phrase(vocab, rng, words=3, with_number=True)
            _draw_fitted(canvas, subtitle, font_path, width / 2, height * 0.62, round(height * 0.07),
                         int(width * 0.9), subtitle_colour)
            lines.append(subtitle)
    return Slide(np.asarray(canvas), lines, f"{template}/{width}x{height}",
                 f"{which}-{index:04d}-{template}-{width}x{height}")


def _phrase(vocab: dict[str, Any], rng: np.random.Generator, words: int, with_number: bool) -> str:
    picked = [str(w) for w in rng.choice(vocab["words"], size=words, replace=False)]
    if with_number:
        low, high = vocab["numbers"]
        mark = vocab["punctuation"][int(rng.integers(len(vocab["punctuation"])))]
        picked[-1] = f"{picked[-1]}{mark}" if mark != "/" else picked[-1]
        number = str(int(rng.integers(low, high + 1)))
        picked.append(f"{number}/{int(rng.integers(low, high + 1))}" if mark == "/" else number)
    return " ".join(picked)


def _draw_fitted(canvas: Any, text: str, font_path: Path, x: float, y: float, size: int, max_width: int,
                 colour: tuple[int, int, int]) -> None:
    """Centre `text` at (x, y) at the largest size <= `size` that fits `max_width`."""
    from PIL import ImageDraw, ImageFont

    draw = ImageDraw.Draw(canvas)
    for candidate in range(size, 9, -2):
        font = ImageFont.truetype(str(font_path), candidate)
        if draw.textlength(text, font=font) <= max_width:
            break
    draw.text((x, y), text, font=font, fill=colour, anchor="mm")


def _photo_background(name: str, size: tuple[int, int]) -> Any:
    """A scikit-image photo scaled to cover the frame and centre-cropped (a full-bleed background)."""
    import skimage.data
    from PIL import Image

    width, height = size
    photo = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    scale = max(width / photo.width, height / photo.height)
    photo = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.Resampling.BILINEAR)
    left, top = (photo.width - width) // 2, (photo.height - height) // 2
    return photo.crop((left, top, left + width, top + height))


def _fonts() -> list[Path]:
    fonts = [d / f for f in FONT_FILES for d in FONT_DIRS if (d / f).is_file()]
    if not fonts:
        raise ExportError(f"no slide fonts found: expected some of {list(FONT_FILES)} in {[str(d) for d in FONT_DIRS]} "
                          f"(apt-get install fonts-dejavu-core fonts-liberation)")
    return fonts


def _read_rgb(path: Path, role: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise ExportError(f"{role}.images: {path} cannot be read as an image ({exc})") from None


def _count_by(slides: list[Slide], key: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for slide in slides:
        counts[key(slide)] = counts.get(key(slide), 0) + 1
    return dict(sorted(counts.items()))

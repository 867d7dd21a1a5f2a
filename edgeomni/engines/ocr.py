"""On-screen text: PP-OCRv4 detector + recognizer (from rapidocr-onnxruntime, copied into the bundle).

Pre- and post-processing are plain numpy, so the runtime needs neither OpenCV nor Pillow:
- detection: the DB probability map is thresholded, and text lines are found as horizontal bands of
  text pixels split at wide column gaps (slides, captions and signs are horizontal; rotated text is
  out of scope and documented as such), each box grown by DB's unclip offset and scored by its mean
  probability;
- recognition: each box is cropped, resized to height 48 and decoded greedily (CTC) with the dictionary
  shipped in the recognizer's metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeomni.bundle import VerifiedBundle
from edgeomni.engines.backend import BackendChoice, open_engine
from edgeomni.engines.image_preprocess import resize_float
from edgeomni.engines.session import EngineProfile, create_session

_MAX_WIDTH_IN_HEIGHTS = 32  # a recognizer input is at most this many line heights wide (longer lines are squeezed)


@dataclass(frozen=True, slots=True)
class TextLine:
    text: str
    score: float
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the input frame's pixels


def _runs(mask: np.ndarray, max_gap: int = 0) -> list[tuple[int, int]]:
    """[start, end) runs of True in a 1-D mask, merging runs separated by at most max_gap False cells."""
    padded = np.concatenate(([False], mask, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    runs = list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))
    merged: list[tuple[int, int]] = []
    for start, end in runs:
        if merged and start - merged[-1][1] <= max_gap:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _normalise(pixels: np.ndarray) -> np.ndarray:
    """uint8/float HxWx3 RGB (0..255) -> float32 NCHW BGR in [-1, 1] (PaddleOCR models read BGR)."""
    chw = pixels[..., ::-1].astype(np.float32).transpose(2, 0, 1)
    return (chw / 127.5 - 1.0)[None]


class TextDetector:
    """DB text detector: frame -> boxes of horizontal text lines."""

    backend: BackendChoice | None = None  # what the bundle's detector runs on (TensorRT engine ... CPU)

    def __init__(self, bundle: VerifiedBundle, profile: EngineProfile | None = None, role: str = "ocr-detector"):
        session, self.backend = open_engine(bundle, role, profile, engine_optional=True)
        self._setup(session, bundle.manifest.by_role(role).preprocess)

    @classmethod
    def from_model(cls, model: Path, params: dict[str, Any], profile: EngineProfile | None = None) -> TextDetector:
        """A detector on a loose ONNX file (the export recipe compares FP32 and INT8 files before any bundle exists)."""
        detector = cls.__new__(cls)
        detector._setup(create_session(model, profile), params)
        return detector

    def _setup(self, session: Any, params: dict[str, Any]) -> None:
        self.long_side = int(params.get("long_side", 960))
        self.threshold = float(params.get("threshold", 0.3))
        self.box_threshold = float(params.get("box_threshold", 0.5))
        self.unclip_ratio = float(params.get("unclip_ratio", 1.6))
        self._session = session
        self._input = self._session.get_inputs()[0].name

    @staticmethod
    def input_bounds(params: dict[str, Any]) -> dict[int, tuple[int, int]]:
        """Every input shape `preprocess` can produce (what a TensorRT profile must cover): one frame, each side
        a multiple of 32 from 32 up to the long side."""
        longest = max(32, round(int(params.get("long_side", 960)) / 32) * 32)
        return {0: (1, 1), 2: (32, longest), 3: (32, longest)}

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """Frame -> the network's input tensor (also what INT8 calibration feeds, so both see the same data)."""
        height, width = image.shape[:2]
        scale = min(1.0, self.long_side / max(height, width))
        # The network downsamples by 32: both sides must be multiples of it.
        net_h, net_w = (max(32, round(side * scale / 32) * 32) for side in (height, width))
        return _normalise(resize_float(image, net_h, net_w))

    def __call__(self, image: np.ndarray) -> list[tuple[int, int, int, int]]:
        height, width = image.shape[:2]
        tensor = self.preprocess(image)
        net_h, net_w = tensor.shape[2:]
        prob = self._session.run(None, {self._input: tensor})[0][0, 0]
        return [self._to_frame(box, net_h, net_w, height, width) for box in self._boxes(prob)]

    def _boxes(self, prob: np.ndarray) -> list[tuple[int, int, int, int]]:
        mask = prob > self.threshold
        boxes = []
        for top, bottom in _runs(mask.any(axis=1)):
            band = mask[top:bottom]
            # Words of one line are separated by less than a line height; columns further apart are separate boxes.
            for left, right in _runs(band.any(axis=0), max_gap=max(2, bottom - top)):
                rows = np.flatnonzero(band[:, left:right].any(axis=1))
                y0, y1 = top + int(rows[0]), top + int(rows[-1]) + 1
                if min(y1 - y0, right - left) < 3:
                    continue  # specks, not text
                if float(prob[y0:y1, left:right].mean()) < self.box_threshold:
                    continue
                # DB predicts shrunken text regions; grow them back by area * ratio / perimeter.
                grow = (y1 - y0) * (right - left) * self.unclip_ratio / (2 * ((y1 - y0) + (right - left)))
                boxes.append((left - grow, y0 - grow, right + grow, y1 + grow))
        return boxes

    @staticmethod
    def _to_frame(box: tuple[float, float, float, float], net_h: int, net_w: int, height: int,
                  width: int) -> tuple[int, int, int, int]:
        sx, sy = width / net_w, height / net_h
        x0, y0, x1, y1 = box
        return (max(0, int(x0 * sx)), max(0, int(y0 * sy)), min(width, int(np.ceil(x1 * sx))),
                min(height, int(np.ceil(y1 * sy))))


class TextRecognizer:
    """CRNN-style recognizer: a cropped text line -> (text, mean character confidence)."""

    backend: BackendChoice | None = None

    def __init__(self, bundle: VerifiedBundle, profile: EngineProfile | None = None, role: str = "ocr-recognizer"):
        session, self.backend = open_engine(bundle, role, profile, engine_optional=True)
        self._setup(session, bundle.manifest.by_role(role).preprocess, bundle.role_file("ocr-dictionary"))

    @classmethod
    def from_model(cls, model: Path, params: dict[str, Any], dictionary: Path,
                   profile: EngineProfile | None = None) -> TextRecognizer:
        """A recognizer on a loose ONNX file + dictionary (see TextDetector.from_model)."""
        recognizer = cls.__new__(cls)
        recognizer._setup(create_session(model, profile), params, dictionary)
        return recognizer

    def _setup(self, session: Any, params: dict[str, Any], dictionary: Path) -> None:
        self.height = int(params.get("height", 48))
        self._session = session
        self._input = self._session.get_inputs()[0].name
        # Index 0 is the CTC blank; the model's last class is the space appended to the dictionary.
        self.characters = ["", *dictionary.read_text(encoding="utf-8").splitlines(), " "]

    def preprocess(self, crop: np.ndarray) -> np.ndarray:
        """Cropped line -> input tensor: height fixed, width following the crop's aspect (capped)."""
        h, w = crop.shape[:2]
        width = max(self.height, min(_MAX_WIDTH_IN_HEIGHTS * self.height, round(w * self.height / max(1, h))))
        return _normalise(resize_float(crop, self.height, width))

    @staticmethod
    def input_bounds(params: dict[str, Any]) -> dict[int, tuple[int, int]]:
        """Every input shape `preprocess` can produce: one line, its width from one to 32 heights."""
        height = int(params.get("height", 48))
        return {0: (1, 1), 3: (height, _MAX_WIDTH_IN_HEIGHTS * height)}

    def __call__(self, crop: np.ndarray) -> tuple[str, float]:
        probs = self._session.run(None, {self._input: self.preprocess(crop)})[0][0]
        best, confidence = probs.argmax(axis=1), probs.max(axis=1)
        keep = best != 0
        keep[1:] &= best[1:] != best[:-1]  # CTC: collapse repeats, drop blanks
        if not keep.any():
            return "", 0.0
        return "".join(self.characters[i] for i in best[keep]).strip(), float(confidence[keep].mean())


class TextReader:
    """Detector + recognizer: every readable line on a frame, top to bottom."""

    def __init__(self, bundle: VerifiedBundle, profile: EngineProfile | None = None, min_score: float = 0.5,
                 detector_role: str = "ocr-detector", recognizer_role: str = "ocr-recognizer") -> None:
        self.detector = TextDetector(bundle, profile, detector_role)
        self.recognizer = TextRecognizer(bundle, profile, recognizer_role)
        self.min_score = min_score

    @classmethod
    def from_parts(cls, detector: TextDetector, recognizer: TextRecognizer, min_score: float = 0.5) -> TextReader:
        reader = cls.__new__(cls)
        reader.detector, reader.recognizer, reader.min_score = detector, recognizer, min_score
        return reader

    def crops(self, image: np.ndarray, max_lines: int = 8) -> list[tuple[tuple[int, int, int, int], np.ndarray]]:
        """The detected line boxes big enough to read, with their pixels, top to bottom."""
        found = []
        for box in self.detector(image)[:max_lines]:
            x0, y0, x1, y1 = box
            if x1 - x0 >= 4 and y1 - y0 >= 4:
                found.append((box, image[y0:y1, x0:x1]))
        return found

    def __call__(self, image: np.ndarray, max_lines: int = 8) -> list[TextLine]:
        lines = []
        for box, crop in self.crops(image, max_lines):
            text, score = self.recognizer(crop)
            if text and score >= self.min_score:
                lines.append(TextLine(text, score, box))
        return lines

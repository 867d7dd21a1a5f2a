"""People in view: MediaPipe BlazeFace short-range (converted to ONNX at export time) -> face boxes.

A frame is looked at as square tiles of its shorter side (two for 16:9), each sampled down to 128x128
(nearest pixel: the model is tolerant and this costs ~0.1 ms at 1080p); SSD anchors are generated
once; overlapping detections of one face (several anchors, both tiles) are merged by non-maximum
suppression.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeomni.bundle import VerifiedBundle
from edgeomni.engines.session import EngineProfile, create_session


@dataclass(frozen=True, slots=True)
class Face:
    score: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of the frame's width/height


def ssd_anchors(size: int, strides: list[int], per_cell: list[int]) -> np.ndarray:
    """Anchor centres (N, 2) as fractions of the input, in the order the model emits its regressors."""
    centres = []
    for stride, count in zip(strides, per_cell, strict=True):
        cells = size // stride
        ys, xs = np.mgrid[0:cells, 0:cells]
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 1, 2)
        centres.append(np.repeat(grid, count, axis=1).reshape(-1, 2))
    return np.concatenate(centres).astype(np.float32)


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    x0, y0 = np.maximum(box[0], others[:, 0]), np.maximum(box[1], others[:, 1])
    x1, y1 = np.minimum(box[2], others[:, 2]), np.minimum(box[3], others[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


class FaceDetector:
    def __init__(self, bundle: VerifiedBundle, profile: EngineProfile | None = None, role: str = "face-detector"):
        component = bundle.manifest.by_role(role)
        params = component.preprocess
        self.size = int(params.get("size", 128))
        self.min_score = float(params.get("min_score", 0.7))
        self.iou_merge = float(params.get("iou_merge", 0.3))
        self._anchors = ssd_anchors(self.size, list(params.get("anchor_strides", [8, 16])),
                                    list(params.get("anchors_per_cell", [2, 6])))
        self._session = create_session(bundle.path / component.file, profile)
        self._input = self._session.get_inputs()[0].name
        outputs = [o.name for o in self._session.get_outputs()]
        wanted = ["regressors", "classificators"]
        self._outputs = wanted if set(wanted) <= set(outputs) else outputs

    def _input_tensor(self, image: np.ndarray) -> np.ndarray:
        """A square crop sampled to size x size by index arithmetic (nearest pixel, no full-size copy)."""
        height, width = image.shape[:2]
        rows = np.minimum(((np.arange(self.size) + 0.5) * height / self.size).astype(int), height - 1)
        cols = np.minimum(((np.arange(self.size) + 0.5) * width / self.size).astype(int), width - 1)
        small = image[np.ix_(rows, cols)]
        return (small.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)[None]

    def _tiles(self, height: int, width: int) -> list[tuple[int, int, int]]:
        """Square tiles (x0, y0, side) of the frame's shorter side, evenly spread to cover the longer one.

        The short-range model wants faces to fill a good part of its input: letterboxing a 16:9 frame
        into one square would shrink a face by 1.8x, so a wide frame is looked at as two squares.
        """
        side = min(height, width)
        count = int(np.ceil(max(height, width) / side - 1e-6))
        spread = np.linspace(0, max(height, width) - side, count).round().astype(int) if count > 1 else [0]
        return [(int(o), 0, side) if width >= height else (0, int(o), side) for o in spread]

    def _detect_tile(self, tile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (N, 4) in the tile's unit coordinates and their scores, above min_score."""
        regress, logits = self._session.run(self._outputs, {self._input: self._input_tensor(tile)})
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[0, :, 0], -80.0, 80.0)))
        keep = np.flatnonzero(scores >= self.min_score)
        raw = regress[0, keep, :4] / self.size
        centre, half = self._anchors[keep] + raw[:, :2], raw[:, 2:4] / 2
        return np.concatenate([centre - half, centre + half], axis=1), scores[keep]

    def __call__(self, image: np.ndarray) -> list[Face]:
        height, width = image.shape[:2]
        all_boxes, all_scores = [], []
        for x0, y0, side in self._tiles(height, width):
            boxes, scores = self._detect_tile(image[y0:y0 + side, x0:x0 + side])
            scale = np.array([side / width, side / height, side / width, side / height], np.float32)
            offset = np.array([x0 / width, y0 / height, x0 / width, y0 / height], np.float32)
            all_boxes.append(boxes * scale + offset)
            all_scores.append(scores)
        boxes, scores = np.concatenate(all_boxes), np.concatenate(all_scores)
        faces = []
        remaining = np.argsort(scores)[::-1]
        while remaining.size:  # non-maximum suppression: one face seen by several anchors/tiles counts once
            best, remaining = remaining[0], remaining[1:]
            if remaining.size:
                remaining = remaining[_iou(boxes[best], boxes[remaining]) < self.iou_merge]
            box = tuple(float(v) for v in np.clip(boxes[best], 0.0, 1.0))
            faces.append(Face(float(scores[best]), box))  # type: ignore[arg-type]
        return faces

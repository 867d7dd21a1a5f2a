"""A cheap per-frame change score on a small grey thumbnail: decides which frames need the models.

A 64x36 grey thumbnail (2x2-averaged samples of the frame, ~0.1 ms at 1080p) is compared with a
reference; the score is the share of thumbnail cells whose grey level moved by more than CELL_DELTA
(~15 of 255 levels), 0..1. Counting cells rather than averaging differences keeps a small but real
change visible: two slides of one template differ in 7% of the cells but only 0.018 in mean level,
while codec noise moves no cell (0.0), a speaker's mouth ~0.4%, and a cut between scenes 70-100%.
"""

from __future__ import annotations

import numpy as np

THUMB_W, THUMB_H = 64, 36
CELL_DELTA = 0.06  # a cell counts as changed past this grey-level difference (0..1)
_GREY = np.array([0.299, 0.587, 0.114], np.float32)  # BT.601 luma


def thumbnail(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB -> THUMB_H x THUMB_W float32 grey in [0, 1], the same size for any input size."""
    height, width = image.shape[:2]
    # 2x2 samples per thumbnail pixel, averaged: enough to smooth codec noise, far cheaper than a full area mean.
    rows = np.minimum(((np.arange(THUMB_H * 2) + 0.5) * height / (THUMB_H * 2)).astype(int), height - 1)
    cols = np.minimum(((np.arange(THUMB_W * 2) + 0.5) * width / (THUMB_W * 2)).astype(int), width - 1)
    grey = image[np.ix_(rows, cols)].astype(np.float32) @ _GREY
    return grey.reshape(THUMB_H, 2, THUMB_W, 2).mean(axis=(1, 3)) / 255.0


def change_score(a: np.ndarray, b: np.ndarray) -> float:
    """Share of thumbnail cells that changed, 0 (identical up to noise) .. 1 (every cell changed)."""
    return float((np.abs(a - b) > CELL_DELTA).mean())

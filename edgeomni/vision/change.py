"""A cheap per-frame change score on a small grey thumbnail: decides which frames need the models.

A 64x36 grey thumbnail (block means over a strided sample, ~0.1 ms at 1080p) is compared with a
reference by mean absolute difference in [0, 1]. Small values are codec noise or a speaker's lips;
a slide or camera cut moves most of the thumbnail and scores far above the scene threshold.
"""

from __future__ import annotations

import numpy as np

THUMB_W, THUMB_H = 64, 36
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
    """Mean absolute difference of two thumbnails, 0 (identical) .. 1 (black vs white)."""
    return float(np.abs(a - b).mean())

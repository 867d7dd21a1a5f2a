"""Classifier input from an RGB frame: shorter side to ``size``, centre crop, ImageNet normalisation.

numpy only, because this runs on the edge device for every labelled frame. The export stage calls
the very same function to build its INT8 calibration set, so the activation ranges the quantizer
measures are the ranges the runtime produces; a second implementation would drift.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check_rgb(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise ValueError(f"expected an HxWx3 RGB frame, got shape {shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 RGB frame, got dtype {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"expected a non-empty frame, got shape {image.shape}")
    return image


def _decimate(image: np.ndarray, k: int) -> np.ndarray:
    """Average k x k blocks: a cheap anti-aliasing step, so the bilinear pass never skips source pixels."""
    if k <= 1:
        return image.astype(np.float32)
    h, w = (image.shape[0] // k) * k, (image.shape[1] // k) * k
    # Adding k*k strided views in uint16 is ~8x faster than a float reshape-and-sum at 1080p;
    # k <= 16 keeps the sum (k*k*255) inside uint16.
    k = min(k, 16)
    acc = image[0:h:k, 0:w:k].astype(np.uint16)
    for i in range(k):
        for j in range(k):
            if i or j:
                acc += image[i:h:k, j:w:k]
    return acc.astype(np.float32) * np.float32(1.0 / (k * k))


def _axis_weights(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Half-pixel centres (align_corners=False), the convention PIL and torchvision use.
    pos = (np.arange(dst, dtype=np.float32) + 0.5) * (src / dst) - 0.5
    pos = np.clip(pos, 0.0, src - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, src - 1)
    return lo, hi, (pos - lo).astype(np.float32)


def _bilinear(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    y0, y1, wy = _axis_weights(image.shape[0], out_h)
    x0, x1, wx = _axis_weights(image.shape[1], out_w)
    # Rows first: the intermediate is out_h x W, which is small after the crop and decimation.
    rows = image[y0] * (1.0 - wy)[:, None, None] + image[y1] * wy[:, None, None]
    return rows[:, x0] * (1.0 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]


def resize_float(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Resize an HxWxC uint8 image to out_h x out_w (float32 result, 0..255): block average, then bilinear.

    The block size is the largest that keeps at least out_h x out_w pixels, so the bilinear pass
    shrinks by less than 2x and never skips a source pixel (no aliasing on fine texture).
    """
    k = max(1, min(image.shape[0] // out_h, image.shape[1] // out_w))
    return _bilinear(_decimate(image, k), out_h, out_w).astype(np.float32, copy=False)


def resize_rgb(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Resize an HxWx3 uint8 frame, returning uint8 (used for scale jitter when building calibration sets)."""
    _check_rgb(image)
    return np.clip(np.rint(resize_float(image, out_h, out_w)), 0, 255).astype(np.uint8)


def _normaliser(mean: Sequence[float], std: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need 3 values (R, G, B), got {list(mean)} and {list(std)}")
    std_arr = np.asarray(std, dtype=np.float32)
    if np.any(std_arr <= 0):
        raise ValueError(f"std values must be positive, got {list(std)}")
    # (x/255 - mean)/std folded into one multiply-add per pixel.
    scale = 1.0 / (255.0 * std_arr)
    offset = -np.asarray(mean, dtype=np.float32) / std_arr
    return scale.astype(np.float32), offset.astype(np.float32)


def preprocess_rgb(
    image: np.ndarray,
    size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """HxWx3 uint8 RGB frame -> float32 (1, 3, size, size), shorter side resized to size and centre-cropped.

    Resizing the shorter side to ``size`` and cropping the centre equals resizing the central square
    of side min(H, W), so only that square is touched: at 1080p this skips 44% of the pixels.
    """
    _check_rgb(image)
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = image[top : top + side, left : left + side]
    resized = resize_float(square, size, size)
    scale, offset = _normaliser(mean, std)
    normalised = resized * scale + offset
    return np.ascontiguousarray(normalised.transpose(2, 0, 1)[None], dtype=np.float32)


def preprocess_batch(
    images: Sequence[np.ndarray],
    size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """Several frames (any sizes) -> float32 (N, 3, size, size)."""
    if len(images) == 0:
        return np.zeros((0, 3, size, size), dtype=np.float32)
    return np.concatenate([preprocess_rgb(im, size, mean, std) for im in images], axis=0)

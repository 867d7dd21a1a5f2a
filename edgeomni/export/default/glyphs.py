"""A glyph atlas for burning text into video frames without Pillow or OpenCV at run time.

Built once at export time with Pillow's built-in scalable font (Aileron, CC0-1.0; Pillow >= 10.1): printable
ASCII rendered as 8-bit alpha masks, side by side in one atlas, with each glyph's x offset and advance.
The runtime (edgeomni.sinks.overlay) only slices and blends numpy arrays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FIRST, LAST = 32, 126  # printable ASCII; anything else is drawn as '?'


def build_glyph_atlas(out: Path, size: int = 20) -> Path:
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=size)
    ascent, descent = font.getmetrics()
    height = ascent + descent
    chars = [chr(c) for c in range(FIRST, LAST + 1)]
    widths = [max(1, round(font.getlength(ch))) for ch in chars]
    atlas = Image.new("L", (sum(widths), height), 0)
    draw = ImageDraw.Draw(atlas)
    offsets = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int32)
    for ch, x in zip(chars, offsets, strict=True):
        draw.text((int(x), 0), ch, font=font, fill=255)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as handle:  # np.savez on a handle: the name stays exactly `out`
        np.savez_compressed(handle, atlas=np.asarray(atlas, dtype=np.uint8), offsets=offsets,
                            widths=np.asarray(widths, np.int32), first=np.int32(FIRST))
    return out

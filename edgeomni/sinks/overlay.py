"""Text drawn into RGB frames with numpy only: a glyph atlas from the bundle, line wrapping, blended bands.

The atlas (edgeomni.export.default.glyphs) holds printable ASCII as alpha masks; other characters are drawn as
'?' (captions are English here; a wider atlas is an export-time change only).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

_CACHE_SIZE = 64
# Typographic characters the runtime itself writes (the screen notes' separator) or ASR may produce.
_ASCII_LOOKALIKES = str.maketrans({"·": "-", "—": "-", "–": "-", "’": "'", "‘": "'", "“": '"', "”": '"', "…": "...",
                                   "→": "->", "\u00a0": " "})


class GlyphFont:
    def __init__(self, atlas_path: Path, scale: int = 1) -> None:
        with np.load(atlas_path, allow_pickle=False) as data:
            self.atlas = data["atlas"]
            self.offsets, self.widths = data["offsets"], data["widths"]
            self.first = int(data["first"])
        self.height = int(self.atlas.shape[0]) * scale
        self.scale = scale
        self._cache: dict[str, np.ndarray] = {}

    def _index(self, ch: str) -> int:
        code = ord(ch) - self.first
        return code if 0 <= code < len(self.widths) else ord("?") - self.first

    @staticmethod
    def ascii(text: str) -> str:
        return text.translate(_ASCII_LOOKALIKES)

    def measure(self, text: str) -> int:
        return int(sum(int(self.widths[self._index(ch)]) for ch in text)) * self.scale

    def render(self, text: str) -> np.ndarray:
        """One line of text as an alpha mask (height x width, float32 in [0, 1])."""
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        parts = [self.atlas[:, self.offsets[i]:self.offsets[i] + self.widths[i]] for i in map(self._index, text)]
        mask = np.concatenate(parts, axis=1) if parts else np.zeros((self.atlas.shape[0], 1), np.uint8)
        if self.scale > 1:
            mask = mask.repeat(self.scale, axis=0).repeat(self.scale, axis=1)
        rendered = mask.astype(np.float32) / 255.0
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.pop(next(iter(self._cache)))
        self._cache[text] = rendered
        return rendered

    def wrap(self, text: str, max_width: int, max_lines: int = 2) -> list[str]:
        """Greedy word wrap; when the text needs more lines, the newest words win (captions read at the end)."""
        lines: list[str] = []
        for word in self.ascii(text).split():
            if lines and self.measure(lines[-1] + " " + word) <= max_width:
                lines[-1] += " " + word
            else:
                while self.measure(word) > max_width and len(word) > 1:  # a word wider than the frame: cut it
                    word = word[:-1]
                lines.append(word)
        return lines[-max_lines:]


def draw_lines(image: np.ndarray, lines: list[str], font: GlyphFont, *, bottom: int | None = None,
               top: int | None = None, colour: tuple[int, int, int] = (255, 255, 255)) -> None:
    """Centred lines on a darkened band, in place; the band starts at ``top`` or ends at ``bottom``."""
    if not lines:
        return
    height, width = image.shape[:2]
    pad = max(2, font.height // 4)
    band_h = len(lines) * font.height + 2 * pad
    y0 = top if top is not None else (bottom if bottom is not None else height) - band_h
    y0 = int(np.clip(y0, 0, max(0, height - band_h)))
    band = image[y0:y0 + band_h]
    band[:] = (band * 0.35).astype(np.uint8)  # darken so white text reads on any picture
    tint = np.asarray(colour, np.float32)
    for i, line in enumerate(lines):
        mask = font.render(line)[:, :width]
        x0 = max(0, (width - mask.shape[1]) // 2)
        y = pad + i * font.height
        region = band[y:y + mask.shape[0], x0:x0 + mask.shape[1]]
        alpha = mask[:region.shape[0], :region.shape[1], None]
        region[:] = (region * (1.0 - alpha) + tint * alpha).astype(np.uint8)

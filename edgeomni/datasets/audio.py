"""Audio files as the speech models see them (16 kHz mono float32), and whole clips cut for offline recognisers."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import numpy as np

from edgeomni.frames import AudioFrame
from edgeomni.sources import open_source

OFFLINE_LIMIT_S = 30.0  # what one Moonshine or Whisper call is given at most


async def decode(path: Path) -> np.ndarray:
    """The file as 16 kHz mono float32, decoded once through EdgeOmni's own sources (as fast as possible)."""
    source = open_source(str(path), realtime=False, require_audio=True)
    parts = [frame.samples async for frame in source.frames() if isinstance(frame, AudioFrame)]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def decode_audio(path: Path) -> np.ndarray:
    """`decode` for callers outside an event loop."""
    return asyncio.run(decode(path))


def offline_spans(seconds: float, segments: list[list[float]],
                  limit: float = OFFLINE_LIMIT_S) -> list[tuple[float, float]]:
    """Cut a clip into pieces of at most `limit` seconds, in the middle of pauses between speech segments."""
    pauses = [(a[1] + b[0]) / 2 for a, b in itertools.pairwise(segments)]
    spans, start = [], 0.0
    while seconds - start > limit:
        inside = [p for p in pauses if start < p <= start + limit]
        cut = max(inside) if inside else start + limit
        spans.append((start, cut))
        start = cut
    spans.append((start, seconds))
    return spans

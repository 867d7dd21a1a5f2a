"""The units that flow from sources into the pipeline.

Every frame carries two clocks: ``pts`` is its position on the media timeline in seconds (0 at the
start of the stream), and ``arrival`` is the monotonic time (``time.monotonic()``) at which the
source delivered it. Latency is measured from ``arrival``, never assumed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AUDIO_RATE = 16_000
"""Every audio frame leaving a source is 16 kHz mono float32 in [-1, 1]."""


@dataclass(slots=True)
class AudioFrame:
    samples: np.ndarray  # shape (n,), float32, mono, AUDIO_RATE
    pts: float
    arrival: float

    @property
    def duration(self) -> float:
        return len(self.samples) / AUDIO_RATE

    @property
    def end(self) -> float:
        return self.pts + self.duration


@dataclass(slots=True)
class VideoFrame:
    image: np.ndarray  # shape (h, w, 3), uint8, RGB
    pts: float
    arrival: float
    index: int = 0  # decode order within the stream


Frame = AudioFrame | VideoFrame

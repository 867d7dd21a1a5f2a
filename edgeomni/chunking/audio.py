"""Re-frame audio of any frame length into fixed-size frames (the VAD's 32 ms), keeping timestamps."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from edgeomni.frames import AUDIO_RATE, AudioFrame


@dataclass(slots=True)
class FixedFrame:
    samples: np.ndarray  # exactly `size` samples
    pts: float  # media time of the first sample
    arrival: float  # when the source delivered the frame holding this frame's last sample


class AudioFramer:
    """Sources deliver frames of whatever length the codec chose; the VAD wants exactly `size` samples."""

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self._pending = np.zeros(0, dtype=np.float32)
        self._pending_pts = 0.0

    def push(self, frame: AudioFrame) -> Iterator[FixedFrame]:
        if not len(self._pending):
            self._pending_pts = frame.pts
        self._pending = np.concatenate([self._pending, frame.samples])
        whole = len(self._pending) // self.size * self.size
        for offset in range(0, whole, self.size):
            yield FixedFrame(self._pending[offset : offset + self.size], self._pending_pts + offset / AUDIO_RATE,
                             frame.arrival)
        self._pending_pts += whole / AUDIO_RATE
        self._pending = self._pending[whole:]

    def flush(self, arrival: float) -> Iterator[FixedFrame]:
        """Pad the tail with silence so the last few milliseconds of a stream still reach the VAD."""
        if len(self._pending):
            padded = np.zeros(self.size, dtype=np.float32)
            padded[: len(self._pending)] = self._pending
            yield FixedFrame(padded, self._pending_pts, arrival)
            self._pending = np.zeros(0, dtype=np.float32)

"""Hard-example media without image/audio libraries: 16 kHz WAV bytes, a small PNG thumbnail, an audio ring."""

from __future__ import annotations

import io
import struct
import wave
import zlib
from collections import deque

import numpy as np

from edgeomni.frames import AUDIO_RATE, AudioFrame


def wav_bytes(samples: np.ndarray, rate: int = AUDIO_RATE) -> bytes:
    """float32 mono in [-1, 1] -> 16-bit PCM WAV file bytes."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()


def png_thumbnail(image: np.ndarray, width: int = 160) -> bytes:
    """RGB uint8 (h, w, 3) -> a PNG at most `width` pixels wide (nearest-neighbour: a thumbnail, not a photo)."""
    full_width = image.shape[1]
    step = max(1, -(-full_width // width))
    small = np.ascontiguousarray(image[::step, ::step, :3], dtype=np.uint8)
    rows = np.concatenate([np.zeros((small.shape[0], 1), np.uint8), small.reshape(small.shape[0], -1)], axis=1)

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))

    header = struct.pack(">IIBBBBB", small.shape[1], small.shape[0], 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
            + chunk(b"IEND", b""))


class AudioRing:
    """The last `seconds` of a stream's audio, so a final's [start, end] span can be cut out after the fact."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._frames: deque[AudioFrame] = deque()

    def push(self, frame: AudioFrame) -> None:
        self._frames.append(frame)
        while self._frames and self._frames[0].end < frame.end - self.seconds:
            self._frames.popleft()

    def cut(self, start: float, end: float) -> np.ndarray:
        """Samples covering media time [start, end] (as much of it as is still held)."""
        pieces = []
        for frame in self._frames:
            if frame.end <= start or frame.pts >= end:
                continue
            first = max(0, round((start - frame.pts) * AUDIO_RATE))
            last = min(len(frame.samples), round((end - frame.pts) * AUDIO_RATE))
            pieces.append(frame.samples[first:last])
        return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)

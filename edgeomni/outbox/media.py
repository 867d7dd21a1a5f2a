"""Hard-example media without image/audio libraries: 16 kHz WAV bytes, PNG frames and thumbnails, an audio ring."""

from __future__ import annotations

import io
import struct
import wave
import zlib
from collections import deque

import numpy as np

from edgeomni.engines.image_preprocess import resize_rgb
from edgeomni.frames import AUDIO_RATE, AudioFrame, VideoFrame


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
    """RGB uint8 (h, w, 3) -> a PNG at most `width` pixels wide, area-averaged (text on screen stays legible
    where every n-th pixel would alias it away)."""
    h, w = image.shape[:2]
    if w > width:
        image = resize_rgb(image[:, :, :3], max(1, round(h * width / w)), width)
    return png_bytes(image)


def frame_png(image: np.ndarray, short_side: int) -> bytes:
    """RGB uint8 (h, w, 3) -> a PNG whose shorter side is at most `short_side`, area-averaged so it can stand in
    for the frame when calibrating a model that sees its centre square at a smaller size."""
    h, w = image.shape[:2]
    scale = short_side / min(h, w)
    if scale < 1.0:
        image = resize_rgb(image, max(1, round(h * scale)), max(1, round(w * scale)))
    return png_bytes(image)


def png_bytes(image: np.ndarray) -> bytes:
    """RGB uint8 (h, w, 3) -> PNG file bytes (8-bit RGB, zlib level 6)."""
    pixels = np.ascontiguousarray(image[:, :, :3], dtype=np.uint8)
    rows = np.concatenate([np.zeros((pixels.shape[0], 1), np.uint8), pixels.reshape(pixels.shape[0], -1)], axis=1)

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))

    header = struct.pack(">IIBBBBB", pixels.shape[1], pixels.shape[0], 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
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


class FrameRing:
    """A few recent video frames, at least `spacing` seconds of media time apart, covering the last `seconds`:
    enough to find the frame a visual event was about after vision's lag, without holding a second of video."""

    def __init__(self, seconds: float = 4.0, spacing: float = 0.25) -> None:
        self.seconds, self.spacing = seconds, spacing
        self._frames: deque[VideoFrame] = deque()

    def push(self, frame: VideoFrame) -> None:
        if self._frames and frame.pts - self._frames[-1].pts < self.spacing:
            return
        self._frames.append(frame)
        while self._frames[0].pts < frame.pts - self.seconds:
            self._frames.popleft()

    def at(self, pts: float) -> VideoFrame | None:
        """The last frame at or before `pts` (the oldest held when all are later); None before any frame."""
        chosen = self._frames[0] if self._frames else None
        for frame in self._frames:
            if frame.pts <= pts + 1e-6:
                chosen = frame
        return chosen

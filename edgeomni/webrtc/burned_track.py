"""A participant's own video sent back with their captions burned in (offer field `"burn_in": true`).

The session's pipeline hands this track every decoded frame of the participant's camera (through
`BurnedTrackSink.push_frame`) and every caption event (through `send`); `recv()` returns the newest frame
with the caption covering its media time and the latest screen note drawn on it (the same drawing as
`--sink video:`), so a viewer that cannot show a data channel still sees the captions. Live, not delayed:
a frame is drawn with the captions known when it is sent (the caption follows the speech by its usual
latency). When the encoder is slower than the camera, older frames are skipped, never queued.
"""

from __future__ import annotations

import asyncio
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from edgeomni.events import CaptionEvent, Event
from edgeomni.frames import AudioFrame, VideoFrame
from edgeomni.sinks.base import Sink
from edgeomni.sinks.overlay import GlyphFont
from edgeomni.sinks.video import CaptionBoard, burn_in, even_size

_RTP_CLOCK = 90_000  # video RTP timestamps count at 90 kHz


class BurnedTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, glyphs: Path, stream: str) -> None:
        super().__init__()
        self.board = CaptionBoard()
        self.sink = BurnedTrackSink(self, stream)
        self.frames_sent = 0
        self.frames_skipped = 0
        self._glyphs = glyphs
        self._font: GlyphFont | None = None
        self._newest: VideoFrame | None = None
        self._fresh = asyncio.Event()
        self._last_pts = -1

    def push(self, frame: VideoFrame) -> None:
        if self._newest is not None:
            self.frames_skipped += 1
        self._newest = frame
        self._fresh.set()

    async def recv(self) -> av.VideoFrame:
        while self._newest is None:
            if self.readyState != "live":
                raise MediaStreamError
            self._fresh.clear()
            await self._fresh.wait()
        frame, self._newest = self._newest, None
        image = await asyncio.to_thread(self._draw, frame)
        out = av.VideoFrame.from_ndarray(image, format="rgb24")
        self._last_pts = max(self._last_pts + 1, round(frame.pts * _RTP_CLOCK))  # the frame's own media time
        out.pts, out.time_base = self._last_pts, Fraction(1, _RTP_CLOCK)
        self.frames_sent += 1
        return out

    def stop(self) -> None:
        super().stop()
        self._fresh.set()  # a recv() waiting for a frame ends with MediaStreamError

    def counters(self) -> dict[str, int]:
        return {"burned_frames_sent": self.frames_sent, "burned_frames_skipped": self.frames_skipped}

    def _draw(self, frame: VideoFrame) -> Any:
        if self._font is None:
            self._font = GlyphFont(self._glyphs, scale=max(1, frame.image.shape[1] // 640))
        return burn_in(even_size(frame.image), *self.board.at(frame.pts), self._font)


class BurnedTrackSink(Sink):
    """The pipeline side of a BurnedTrack: frames in through push_frame, captions in through send."""

    name = "burned-track"

    def __init__(self, track: BurnedTrack, stream: str) -> None:
        self.track, self.stream = track, stream

    def push_frame(self, stream: str, frame: VideoFrame | AudioFrame) -> None:
        if stream == self.stream and isinstance(frame, VideoFrame):
            self.track.push(frame)

    async def send(self, event: Event) -> None:
        if isinstance(event, CaptionEvent) and event.stream == self.stream:
            self.track.board.update(event)

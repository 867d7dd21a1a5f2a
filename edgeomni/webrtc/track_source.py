"""A Source fed by a participant's incoming aiortc tracks.

aiortc decodes RTP in its own threads and hands out av.AudioFrame/av.VideoFrame from ``track.recv()``;
one reader task per track moves them into a bounded buffer as soon as they arrive (that moment is the
frame's ``arrival``), and ``frames()`` converts them to 16 kHz mono audio / RGB video like a file source
does. When the pipeline falls behind, the buffer drops the oldest video frames first (counted) and, only
past several seconds of backlog, the oldest audio (counted): lag never builds without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from edgeomni.frames import AudioFrame, VideoFrame
from edgeomni.sources.base import Source
from edgeomni.sources.convert import AudioConverter, VideoConverter

# 20 ms Opus frames: 250 = 5 s of audio before audio is dropped. Video: a couple of frames is enough, the
# labeller only looks at one frame per 16-frame block and newer frames are always worth more than old ones.
AUDIO_BACKLOG_FRAMES = 250
VIDEO_BACKLOG_FRAMES = 4


class FrameBuffer:
    """Bounded per kind; ``get`` returns None once the buffer is ended (or finished and quiet) and empty."""

    def __init__(self, caps: dict[str, int]) -> None:
        self.caps = caps
        self.counts = dict.fromkeys(caps, 0)
        self.dropped = dict.fromkeys(caps, 0)
        self.received = dict.fromkeys(caps, 0)
        self.last_put = time.monotonic()
        self._items: deque[tuple[str, Any, float]] = deque()
        self._wake = asyncio.Event()
        self._ended = False
        self._quiet_after: float | None = None

    def put(self, kind: str, frame: Any, arrival: float) -> None:
        if self._ended:
            return
        self.received[kind] += 1
        if self.counts[kind] >= self.caps[kind]:
            for index, item in enumerate(self._items):  # the oldest frame of this kind goes
                if item[0] == kind:
                    del self._items[index]
                    break
            self.counts[kind] -= 1
            self.dropped[kind] += 1
        self._items.append((kind, frame, arrival))
        self.counts[kind] += 1
        self.last_put = arrival
        self._wake.set()

    def end(self) -> None:
        """No more frames will come: what is buffered is still delivered, then ``get`` returns None."""
        self._ended = True
        self._wake.set()

    def drain_until_quiet(self, quiet_s: float) -> None:
        """End once nothing has arrived for ``quiet_s``: packets still in flight are not cut off."""
        self._quiet_after = quiet_s
        self._wake.set()

    def discard(self) -> None:
        self._items.clear()
        self.counts = dict.fromkeys(self.caps, 0)
        self.end()

    async def get(self) -> tuple[str, Any, float] | None:
        while not self._items:
            if self._ended:
                return None
            self._wake.clear()
            timeout = None
            if self._quiet_after is not None:
                timeout = max(0.0, self.last_put + self._quiet_after - time.monotonic())
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                self._ended = True
        kind, frame, arrival = self._items.popleft()
        self.counts[kind] -= 1
        return kind, frame, arrival


class TrackSource(Source):
    """The participant's audio (and video, if sent) as one EdgeOmni source."""

    def __init__(self, name: str, video_width: int | None = 640) -> None:
        super().__init__(f"webrtc:{name}", name, live=True, paced=False)
        self.buffer = FrameBuffer({"audio": AUDIO_BACKLOG_FRAMES, "video": VIDEO_BACKLOG_FRAMES})
        self._video_size = (video_width, -1) if video_width else None
        self._readers: list[asyncio.Task[None]] = []
        self._clock0: float | None = None
        self._audio: AudioConverter | None = None
        self._video: VideoConverter | None = None

    def attach(self, track: Any) -> None:
        """Start reading one remote track ("audio" or "video"); others (a second audio track) are ignored."""
        if track.kind == "audio" and not self.has_audio:
            self.has_audio = True
        elif track.kind == "video" and not self.has_video:
            self.has_video = True
        else:
            return
        self._streams.append(f"{track.kind} (WebRTC)")  # detailed once its first frame is seen
        self._readers.append(asyncio.create_task(self._read(track), name=f"webrtc-track:{self.name}:{track.kind}"))

    def finish(self, quiet_s: float = 0.5) -> None:
        """The participant says it is done: deliver what is still arriving, then end the stream."""
        self.buffer.drain_until_quiet(quiet_s)

    async def frames(self) -> AsyncIterator[AudioFrame | VideoFrame]:  # type: ignore[override]
        while (item := await self.buffer.get()) is not None:
            kind, frame, arrival = item
            if self._clock0 is None:
                self._clock0 = arrival
                self.started_monotonic, self.started_wall = arrival, time.time() - (time.monotonic() - arrival)
            if kind == "audio":
                for out in self._convert_audio(frame, arrival):
                    yield out
            else:
                yield self._convert_video(frame, arrival)

    async def close(self) -> None:
        self.buffer.discard()
        for task in self._readers:
            task.cancel()
        for task in self._readers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._readers.clear()

    def counters(self) -> dict[str, int]:
        return {f"{kind}_frames_{what}": values[kind] for what, values in
                (("received", self.buffer.received), ("dropped", self.buffer.dropped)) for kind in values}

    # -- conversion ---------------------------------------------------------------------------------------
    def _origin(self, frame: Any, arrival: float) -> float:
        """Each RTP stream starts at a random timestamp; anchor it so its first frame sits at its arrival."""
        assert self._clock0 is not None
        return (frame.time or 0.0) - (arrival - self._clock0)

    def _convert_audio(self, frame: Any, arrival: float) -> list[AudioFrame]:
        if self._audio is None:
            self._audio = AudioConverter(origin=self._origin(frame, arrival))
            self._describe_stream("audio", f"audio {frame.sample_rate} Hz {frame.layout.name} (WebRTC)")
        out = self._audio.push(frame)
        for converted in out:
            converted.arrival = arrival
        return out

    def _convert_video(self, frame: Any, arrival: float) -> VideoFrame:
        if self._video is None:
            self._video = VideoConverter(origin=self._origin(frame, arrival), size=self._video_size)
            self._describe_stream("video", f"video {frame.width}x{frame.height} (WebRTC)")
        converted = self._video.push(frame)
        converted.arrival = arrival
        return converted

    def _describe_stream(self, kind: str, text: str) -> None:
        self._streams = [text if entry == f"{kind} (WebRTC)" else entry for entry in self._streams]

    async def _read(self, track: Any) -> None:
        from aiortc.mediastreams import MediaStreamError

        try:
            while True:
                frame = await track.recv()
                self.buffer.put(track.kind, frame, time.monotonic())
        except MediaStreamError:
            pass  # the track ended (the peer removed it or the connection closed)
        finally:
            if all(task.done() or task is asyncio.current_task() for task in self._readers):
                self.buffer.end()

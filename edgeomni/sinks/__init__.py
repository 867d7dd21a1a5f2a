"""Sinks: where captions go. `open_sink` parses a --sink spec; `SinkSet` fans events out to all of them."""

from __future__ import annotations

import asyncio
import contextlib

from edgeomni.bundle import VerifiedBundle
from edgeomni.errors import SinkError
from edgeomni.events import Event, PartialEvent, Settled
from edgeomni.frames import AudioFrame, VideoFrame
from edgeomni.sinks.base import Sink
from edgeomni.sinks.files import JsonlSink, SubtitleSink
from edgeomni.sinks.terminal import TerminalSink
from edgeomni.sinks.video import BurnedVideoSink

SINK_FORMS = "terminal, jsonl:PATH (- for stdout), vtt:PATH, srt:PATH, video:PATH.mp4"


def open_sink(spec: str, bundle: VerifiedBundle | None = None) -> Sink:
    """``bundle`` is needed by sinks that draw (video: its glyph atlas)."""
    kind, _, target = spec.partition(":")
    if kind == "terminal" and not target:
        return TerminalSink()
    if kind in ("jsonl", "vtt", "srt"):
        if not target:
            raise SinkError(f"sink {spec!r}: {kind} needs a path, e.g. {kind}:captions.{kind} (or {kind}:- for stdout)")
        return JsonlSink(target) if kind == "jsonl" else SubtitleSink(target, kind)
    if kind == "video":  # captions and screen notes burned into the frames
        if not target or target == "-":
            raise SinkError(f"sink {spec!r}: video needs a file path, e.g. video:captioned.mp4")
        if bundle is None or not bundle.manifest.has_role("overlay-glyphs"):
            raise SinkError(f"sink {spec!r}: the bundle has no overlay-glyphs component (rebuild it: "
                            f"edgeomni bundle build-default)")
        return BurnedVideoSink(target, bundle.role_file("overlay-glyphs"))
    raise SinkError(f"unknown sink {spec!r}; expected one of: {SINK_FORMS}")


class SinkSet:
    """Each sink drains its own bounded queue, so a slow sink never stalls the pipeline or the other sinks.

    When a sink falls behind, partial captions (superseded anyway) are dropped for it and counted;
    finals, visual notes and start/end records are always delivered.
    """

    def __init__(self, sinks: list[Sink], depth: int = 256) -> None:
        self.sinks = sinks
        self.dropped: dict[str, int] = {s.name: 0 for s in sinks}
        self.failures: dict[str, str] = {}
        self._queues = [asyncio.Queue[Event | None](maxsize=depth) for _ in sinks]
        self._tasks = [asyncio.create_task(self._drain(s, q), name=f"sink:{s.name}")
                       for s, q in zip(sinks, self._queues, strict=True)]
        # Only sinks that write media pay a call per frame.
        self._frame_sinks = [s for s in sinks if type(s).push_frame is not Sink.push_frame]

    def push_frame(self, stream: str, frame: VideoFrame | AudioFrame) -> None:
        """Decoded frames, video and audio, for sinks that write media (video:); never blocks."""
        for sink in self._frame_sinks:
            sink.push_frame(stream, frame)

    async def settle(self, stream: str, media: float, realtime: bool) -> None:
        """Tell the sinks that draw captions onto frames that no caption of `stream` starting before `media`
        is still to come; queued behind the captions already published, so it never overtakes them."""
        marker = Settled(stream=stream, media=media, realtime=realtime)
        for sink, queue in zip(self.sinks, self._queues, strict=True):
            if sink.wants_settled:
                await queue.put(marker)

    @property
    def wants_settled(self) -> bool:
        return any(sink.wants_settled for sink in self.sinks)

    @property
    def backlogged(self) -> bool:
        return any(sink.backlogged for sink in self.sinks)

    async def publish(self, event: Event) -> None:
        for sink, queue in zip(self.sinks, self._queues, strict=True):
            if isinstance(event, PartialEvent) and queue.full():
                self.dropped[sink.name] += 1
                continue
            await queue.put(event)

    async def close(self) -> None:
        for queue in self._queues:
            await queue.put(None)
        await asyncio.gather(*self._tasks)
        for sink in self.sinks:
            with contextlib.suppress(Exception):
                await sink.close()

    async def _drain(self, sink: Sink, queue: asyncio.Queue[Event | None]) -> None:
        broken = False
        while (event := await queue.get()) is not None:
            if broken:
                continue  # keep draining so that publishers never block on a dead sink
            try:
                await sink.send(event)
            except Exception as exc:  # a failing sink must not take the pipeline or other sinks down
                broken = True
                self.failures[sink.name] = f"{type(exc).__name__}: {exc}"


__all__ = ["SINK_FORMS", "Event", "Sink", "SinkSet", "open_sink"]

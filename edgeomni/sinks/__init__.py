"""Sinks: where captions go. `open_sink` parses a --sink spec; `SinkSet` fans events out to all of them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import asdict, dataclass
from typing import Any

from edgeomni.bundle import VerifiedBundle
from edgeomni.errors import SinkError
from edgeomni.events import Event, PartialEvent, Settled
from edgeomni.frames import AudioFrame, VideoFrame
from edgeomni.sinks.base import Sink
from edgeomni.sinks.files import JsonlSink, SubtitleSink
from edgeomni.sinks.terminal import TerminalSink
from edgeomni.sinks.video import BurnedVideoSink

SINK_FORMS = "terminal, jsonl:PATH (- for stdout), vtt:PATH, srt:PATH, video:PATH.mp4"
log = logging.getLogger("edgeomni.sinks")


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


@dataclass
class SinkHealth:
    """How a sink's sends went: failed attempts, events it never got, whether it was given up on."""

    failures: int = 0
    lost: int = 0  # events it never got: given up on, or its queue full while it was failing
    gave_up: bool = False
    last_error: str = ""
    in_a_row: int = 0

    @property
    def failing(self) -> bool:
        return self.gave_up or self.in_a_row > 0

    def report(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if key != "in_a_row"}


class SinkSet:
    """Each sink drains its own bounded queue, so a slow sink never stalls the pipeline or the other sinks.

    When a sink falls behind, partial captions (superseded anyway) are dropped for it and counted;
    finals, visual notes and start/end records are always delivered. A send that fails (a full disk) is tried
    again with a backoff (`retry_s`: first and longest wait); the sink is given up on for the rest of the run only
    after `max_failures` failures in a row. While it fails, publishers never wait on it: an event that finds its
    queue full is lost for that sink and counted. Failures are logged (stderr) and reported per sink by
    `failure_report()`, which the stream's `end` record carries as `sink_failures`.
    """

    def __init__(self, sinks: list[Sink], depth: int = 256, retry_s: tuple[float, float] = (0.5, 30.0),
                 max_failures: int = 8) -> None:  # about a minute of failing before giving up
        self.sinks = sinks
        self.dropped: dict[str, int] = {s.name: 0 for s in sinks}
        self.failures: dict[str, str] = {}  # sink name -> its last error
        self.retry_s, self.max_failures = retry_s, max_failures
        self._health = [SinkHealth() for _ in sinks]
        self._closing = asyncio.Event()  # no more waiting between retries: the run is over
        self._queues = [asyncio.Queue[Event | None](maxsize=depth) for _ in sinks]
        self._tasks = [asyncio.create_task(self._drain(s, q, h), name=f"sink:{s.name}")
                       for s, q, h in zip(sinks, self._queues, self._health, strict=True)]
        # Only sinks that write media pay a call per frame.
        self._frame_sinks = [s for s in sinks if type(s).push_frame is not Sink.push_frame]

    def failure_report(self) -> dict[str, dict[str, Any]]:
        """Per sink that failed at least once: failures, lost events, whether it was given up on, the last error."""
        return {sink.name: health.report() for sink, health in zip(self.sinks, self._health, strict=True)
                if health.failures}

    def push_frame(self, stream: str, frame: VideoFrame | AudioFrame) -> None:
        """Decoded frames, video and audio, for sinks that write media (video:); never blocks."""
        for sink in self._frame_sinks:
            sink.push_frame(stream, frame)

    async def settle(self, stream: str, media: float, realtime: bool) -> None:
        """Tell the sinks that draw captions onto frames that no caption of `stream` starting before `media`
        is still to come; queued behind the captions already published, so it never overtakes them."""
        marker = Settled(stream=stream, media=media, realtime=realtime)
        for sink, queue, health in zip(self.sinks, self._queues, self._health, strict=True):
            if sink.wants_settled and not (health.failing and queue.full()):
                await queue.put(marker)

    @property
    def wants_settled(self) -> bool:
        return any(sink.wants_settled for sink in self.sinks)

    @property
    def backlogged(self) -> bool:
        return any(sink.backlogged for sink, health in zip(self.sinks, self._health, strict=True)
                   if not health.gave_up)

    async def publish(self, event: Event) -> None:
        for sink, queue, health in zip(self.sinks, self._queues, self._health, strict=True):
            if queue.full() and isinstance(event, PartialEvent):
                self.dropped[sink.name] += 1
            elif queue.full() and health.failing:
                health.lost += 1
            else:
                await queue.put(event)

    async def close(self) -> None:
        self._closing.set()
        for queue in self._queues:
            await queue.put(None)
        await asyncio.gather(*self._tasks)
        for sink in self.sinks:
            with contextlib.suppress(Exception):
                await sink.close()

    async def _drain(self, sink: Sink, queue: asyncio.Queue[Event | None], health: SinkHealth) -> None:
        while (event := await queue.get()) is not None:
            if health.gave_up:  # keep draining: publishers never block on a sink given up on
                if not isinstance(event, Settled):
                    health.lost += 1
                continue
            await self._deliver(sink, event, health)

    async def _deliver(self, sink: Sink, event: Event, health: SinkHealth) -> None:
        """Send one event, retrying with a backoff; a failing sink must not take the pipeline or others down."""
        wait = self.retry_s[0]
        while True:
            try:
                await sink.send(event)
            except Exception as exc:
                health.failures += 1
                health.in_a_row += 1
                health.last_error = self.failures[sink.name] = f"{type(exc).__name__}: {exc}"[:300]
                if health.in_a_row >= self.max_failures:
                    health.gave_up = True
                    if not isinstance(event, Settled):
                        health.lost += 1
                    log.warning("sink %s: %d failures in a row (last: %s); it gets nothing more this run", sink.name,
                                health.in_a_row, health.last_error)
                    return
                if health.in_a_row == 1:
                    log.warning("sink %s failed (%s); retrying", sink.name, health.last_error)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), wait)
                wait = min(wait * 2, self.retry_s[1])
                continue
            if health.in_a_row:
                log.warning("sink %s works again after %d failure(s)", sink.name, health.in_a_row)
                health.in_a_row = 0
            return


__all__ = ["SINK_FORMS", "Event", "Sink", "SinkSet", "open_sink"]

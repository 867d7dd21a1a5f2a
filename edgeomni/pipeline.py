"""The data path for one stream: source -> framing -> engines -> caption heads -> sinks.

Engines are loaded once (`Engines.load`) and shared by every stream; each stream gets its own heads (with their
per-stream state: VAD state, endpointing, scene state). One asyncio loop drives everything; inference runs in a
thread pool (onnxruntime releases the GIL), so the loop never blocks on a model.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol

from edgeomni.captions import HEADS, Head, HeadContext
from edgeomni.config import RunConfig
from edgeomni.engines.bundle_engines import Engines
from edgeomni.errors import EdgeOmniError
from edgeomni.events import (
    CaptionEvent,
    EndEvent,
    ErrorEvent,
    Event,
    FinalEvent,
    MediaClock,
    OtaEvent,
    PartialEvent,
    StartEvent,
    VisualEvent,
)
from edgeomni.frames import AudioFrame, VideoFrame
from edgeomni.sinks import SinkSet
from edgeomni.sources import Source
from edgeomni.telemetry import percentiles

_SETTLE_STEP_S = 0.02  # a settled marker goes out when the settled media time has moved this far

FrameTap = Callable[[AudioFrame | VideoFrame], None]


class StreamObserver(Protocol):
    """Sees every event a stream publishes, inline and before the sinks (metrics); must not block."""

    def observe(self, pipeline: Pipeline, event: Event) -> None: ...

    def stream_closed(self, pipeline: Pipeline) -> None:
        """The stream ended without its end event (cancelled)."""


@dataclass
class _Tally:
    latencies: dict[str, list[float]] = field(default_factory=dict)

    def add(self, event: CaptionEvent) -> None:
        self.latencies.setdefault(event.type, []).append(event.latency_ms)

    def count(self, kind: type[CaptionEvent]) -> int:
        return len(self.latencies.get(kind.type, []))

    def summary(self) -> dict[str, dict[str, float]]:
        return {kind: percentiles(values) for kind, values in self.latencies.items() if values}


class Pipeline:
    """One stream. `run()` drives it to the end of its source and returns the `EndEvent` it published."""

    def __init__(self, source: Source, engines: Engines, sinks: SinkSet, config: RunConfig, executor: Executor,
                 stream: str = "main", frame_tap: FrameTap | None = None,
                 heads: Sequence[type[Head]] = HEADS, observer: StreamObserver | None = None) -> None:
        self.source, self.engines, self.sinks, self.config = source, engines, sinks, config
        self.executor, self.stream = executor, stream
        self.frame_tap = frame_tap  # sees every frame (the outbox keeps recent audio for hard examples); O(1)
        self.observer = observer
        self.last_arrival: float | None = None  # monotonic delivery time of the newest frame (readiness)
        self.ended = False
        self.clock = MediaClock()
        self.heads: list[Head] = []
        self._head_kinds = tuple(heads)
        self._tally = _Tally()
        self._stop = asyncio.Event()
        self._bundle_tags: dict[str, str] = {}  # which bundle each head runs now
        self._switch_events: set[asyncio.Task[None]] = set()
        self._settled_sent = -math.inf  # the last settled time told to the sinks

    def stop(self) -> None:
        """Ask the pipeline to end as if the source had ended: in-flight speech still gets its final."""
        self._stop.set()

    def _open_heads(self, realtime: bool) -> list[Head]:
        heads: list[Head] = []
        for kind in self._head_kinds:
            context = HeadContext(self.stream, self.config, self.executor,
                                  functools.partial(self._emit, kind.name), self.clock, realtime)
            head = kind.open(self.engines, self.source, context)
            if head is not None:
                heads.append(head)
                self._bundle_tags[kind.name] = self.engines.tag
        return heads

    async def run(self) -> EndEvent:
        realtime = self.source.paced or self.source.live
        self.heads = heads = self._open_heads(realtime)
        audio_heads = [h for h in heads if h.frame_type is AudioFrame]
        video_heads = [h for h in heads if h.frame_type is VideoFrame]
        started_cpu, started_at = time.process_time(), time.monotonic()
        media_end, last_arrival, error, started = 0.0, time.monotonic(), None, False
        try:
            async for frame in self.source.frames():
                if not started:
                    started = True
                    await self._start()
                last_arrival = self.last_arrival = frame.arrival
                if self.frame_tap is not None:
                    self.frame_tap(frame)
                self.sinks.push_frame(self.stream, frame)  # sinks that write media (video:)
                audio = isinstance(frame, AudioFrame)
                media_end = max(media_end, frame.end if audio else frame.pts)
                for head in audio_heads if audio else video_heads:
                    await head.push(frame)
                await self._settle(realtime)
                if self._stop.is_set():
                    break
        except EdgeOmniError as exc:
            # Everything already delivered is still captioned below; the error is reported, not swallowed.
            error = str(exc)
            await self._publish(ErrorEvent(stream=self.stream, message=error))
        except BaseException:
            for head in heads:
                await head.cancel()
            self.ended = True
            if self.observer is not None:
                self.observer.stream_closed(self)
            raise
        finally:
            await self.source.close()
        if not started:
            await self._start()  # a source that delivered nothing still gets its start record
        for head in heads:
            await head.finish(last_arrival)
        await self.sinks.settle(self.stream, math.inf, realtime)  # every caption is out
        counters = self.counters()
        compute = sum(head.compute_seconds for head in heads)
        end = EndEvent(
            stream=self.stream, source=self.source.spec, media_seconds=round(media_end, 3),
            wall_seconds=round(time.monotonic() - started_at, 3), finals=self._tally.count(FinalEvent),
            partials=self._tally.count(PartialEvent), visuals=self._tally.count(VisualEvent),
            latency_ms=self._tally.summary(), rtf=round(compute / media_end, 4) if media_end else None,
            cpu_seconds=round(time.process_time() - started_cpu, 3), counters=counters,
            sink_drops=dict(self.sinks.dropped), error=error, sink_failures=self.sinks.failure_report(),
        )
        self.ended = True
        await self._publish(end)
        return end

    def counters(self) -> dict[str, Any]:
        """The heads' counters as they stand (the `end` record's `counters`; metrics read them live)."""
        counters: dict[str, Any] = {}
        for head in self.heads:
            counters.update(head.counters())
        return counters

    async def _publish(self, event: Event) -> None:
        if self.observer is not None:
            self.observer.observe(self, event)
        await self.sinks.publish(event)

    async def _settle(self, realtime: bool) -> None:
        """Tell sinks that draw onto frames how far the captions are complete. An unpaced source (a file read
        as fast as possible) also waits here while such a sink holds its fill of frames: nothing is dropped."""
        if not self.sinks.wants_settled:
            return  # nobody draws onto frames: no per-frame work
        while True:
            settled = min((head.settled_until() for head in self.heads), default=math.inf)
            if settled - self._settled_sent >= _SETTLE_STEP_S:  # (inf - inf is nan: sent once)
                self._settled_sent = settled
                await self.sinks.settle(self.stream, settled, realtime)
            if realtime or not self.sinks.backlogged:
                return
            await asyncio.sleep(0.02)  # the heads are still working on what the sink holds

    async def _start(self) -> None:
        self.clock.origin = self.source.started_monotonic or time.monotonic()
        await self._publish(StartEvent(
            stream=self.stream, source=self.source.spec, wall=self.source.started_wall or time.time(),
            describe=self.source.describe(), bundle=self.engines.tag, backend=self.engines.backends))

    async def _emit(self, head: str, event: Event) -> None:
        if isinstance(event, CaptionEvent):
            self._tally.add(event)
            event = event.with_bundle(self._bundle_tags[head])
        await self._publish(event)

    def use_engines(self, engines: Engines) -> None:
        """Move this stream to another bundle's engines (OTA). Each head switches all of its models at its next
        pause (speech between utterances, vision between blocks); the stream never stops and no utterance or
        block mixes models. Streams started later open their heads on `engines` directly."""
        previous, self.engines = self.engines, engines
        for head in self.heads:
            head.switch(engines, previous, functools.partial(self._switched, head.name, engines.tag))

    def _switched(self, head: str, tag: str) -> None:
        previous, self._bundle_tags[head] = self._bundle_tags[head], tag
        event = OtaEvent(status="switched", stream=self.stream, head=head, bundle=tag, previous=previous,
                         emitted=round(self.clock.now(), 3))
        task = asyncio.get_running_loop().create_task(self._publish(event))
        self._switch_events.add(task)  # keep a reference until it is published
        task.add_done_callback(self._switch_events.discard)


__all__ = ["FrameTap", "Pipeline", "StreamObserver"]

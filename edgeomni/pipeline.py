"""The data path for one stream: source -> chunkers -> engines -> caption heads -> sinks.

Engines are loaded once (`Engines.load`) and shared by every stream; each stream gets its own
stateful VAD and its own caption heads. One asyncio loop drives everything; inference runs in a
thread pool (onnxruntime releases the GIL), so the loop never blocks on a model.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from edgeomni.bundle import VerifiedBundle
from edgeomni.captions.events import CaptionEvent, MediaClock
from edgeomni.captions.speech import SpeechCaptioner
from edgeomni.captions.visual import VisualTagger
from edgeomni.config import RunConfig
from edgeomni.engines.asr import MoonshineAsr
from edgeomni.engines.labeller import ImageLabeller
from edgeomni.engines.session import EngineProfile
from edgeomni.engines.vad import SileroVad
from edgeomni.errors import EdgeOmniError
from edgeomni.frames import AudioFrame
from edgeomni.sinks import SinkSet
from edgeomni.sources import Source
from edgeomni.telemetry import percentiles


@dataclass
class Engines:
    """The models of one bundle, loaded once and shared by all streams."""

    bundle: VerifiedBundle
    profile: EngineProfile
    asr: MoonshineAsr | None
    labeller: ImageLabeller | None

    @classmethod
    def load(cls, bundle: VerifiedBundle, config: RunConfig) -> Engines:
        profile = EngineProfile(tuple(config.engine.providers), config.engine.threads_per_engine)
        asr = MoonshineAsr(bundle, profile) if config.speech.enabled else None
        wants_labels = config.visual.enabled and bundle.manifest.has_role("image-labeller")
        labeller = ImageLabeller(bundle, profile) if wants_labels else None
        return cls(bundle, profile, asr, labeller)

    def new_vad(self) -> SileroVad:
        return SileroVad(self.bundle, self.profile)


@dataclass
class _Tally:
    latencies: dict[str, list[float]] = field(default_factory=dict)

    def add(self, event: CaptionEvent) -> None:
        self.latencies.setdefault(event.type, []).append(event.latency_ms)

    def count(self, kind: str) -> int:
        return len(self.latencies.get(kind, []))

    def summary(self) -> dict[str, dict[str, float]]:
        return {kind: percentiles(values) for kind, values in self.latencies.items() if values}


class Pipeline:
    def __init__(self, source: Source, engines: Engines, sinks: SinkSet, config: RunConfig, executor: Executor,
                 stream: str = "main") -> None:
        self.source, self.engines, self.sinks, self.config = source, engines, sinks, config
        self.executor, self.stream = executor, stream
        self.clock = MediaClock()
        self._tally = _Tally()
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """Ask the pipeline to end as if the source had ended: in-flight speech still gets its final."""
        self._stop.set()

    async def run(self) -> dict[str, Any]:
        speech: SpeechCaptioner | None = None
        visual: VisualTagger | None = None
        if self.engines.asr is not None and self.source.has_audio:
            speech = SpeechCaptioner(self.stream, self.engines.new_vad(), self.engines.asr, self.config.speech,
                                     self.executor, self._emit, self.clock)
        if self.engines.labeller is not None and self.source.has_video:
            visual = VisualTagger(self.stream, self.engines.labeller, self.config.visual, self.executor,
                                  self._emit, self.clock)
        started_cpu, started = time.process_time(), time.monotonic()
        media_end, last_arrival, error, started = 0.0, time.monotonic(), None, False
        try:
            async for frame in self.source.frames():
                if not started:
                    started = True
                    await self._start()
                last_arrival = frame.arrival
                if isinstance(frame, AudioFrame):
                    media_end = max(media_end, frame.end)
                    if speech is not None:
                        await speech.push(frame)
                else:
                    media_end = max(media_end, frame.pts)
                    if visual is not None:
                        await visual.push(frame)
                if self._stop.is_set():
                    break
        except EdgeOmniError as exc:
            # Everything already delivered is still captioned below; the error is reported, not swallowed.
            error = str(exc)
            await self.sinks.publish({"type": "error", "stream": self.stream, "message": error})
        except BaseException:
            for head in (speech, visual):
                if head is not None:
                    await head.cancel()
            raise
        finally:
            await self.source.close()
        if not started:
            await self._start()  # a source that delivered nothing still gets its start record
        if speech is not None:
            await speech.finish(last_arrival)
        if visual is not None:
            await visual.finish()
        wall = time.monotonic() - started
        counters: dict[str, Any] = {}
        compute = 0.0
        if speech is not None:
            counters.update(speech.counters())
            compute += speech.stats["asr_seconds"]
        if visual is not None:
            counters.update(visual.counters())
            compute += visual.vision_seconds
        end = {
            "type": "end", "stream": self.stream, "source": self.source.spec,
            "media_seconds": round(media_end, 3), "wall_seconds": round(wall, 3),
            "finals": self._tally.count("final"), "partials": self._tally.count("partial"),
            "visuals": self._tally.count("visual"), "latency_ms": self._tally.summary(),
            "rtf": round(compute / media_end, 4) if media_end else None,
            "cpu_seconds": round(time.process_time() - started_cpu, 3),
            "counters": counters, "sink_drops": dict(self.sinks.dropped), "error": error,
        }
        await self.sinks.publish(end)
        return end

    async def _start(self) -> None:
        self.clock.origin = self.source.started_monotonic or time.monotonic()
        await self.sinks.publish({"type": "start", "stream": self.stream, "source": self.source.spec,
                                  "wall": self.source.started_wall or time.time(),
                                  "describe": self.source.describe()})

    async def _emit(self, event: CaptionEvent) -> None:
        self._tally.add(event)
        await self.sinks.publish(event.to_dict())

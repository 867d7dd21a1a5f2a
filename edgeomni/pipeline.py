"""The data path for one stream: source -> chunkers -> engines -> caption heads -> sinks.

Engines are loaded once (`Engines.load`) and shared by every stream; each stream gets its own
stateful VAD and its own caption heads. One asyncio loop drives everything; inference runs in a
thread pool (onnxruntime releases the GIL), so the loop never blocks on a model.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from edgeomni.bundle import VerifiedBundle
from edgeomni.captions.events import CaptionEvent, MediaClock
from edgeomni.captions.speech import SpeechCaptioner
from edgeomni.captions.visual import VisualTagger
from edgeomni.config import RunConfig
from edgeomni.engines.asr import MoonshineAsr
from edgeomni.engines.faces import FaceDetector
from edgeomni.engines.labeller import ImageLabeller
from edgeomni.engines.ocr import TextReader
from edgeomni.engines.session import EngineProfile
from edgeomni.engines.vad import SileroVad
from edgeomni.engines.whisper_asr import WhisperAsr
from edgeomni.errors import EdgeOmniError
from edgeomni.frames import AudioFrame, VideoFrame
from edgeomni.sinks import SinkSet
from edgeomni.sources import Source
from edgeomni.telemetry import percentiles
from edgeomni.vision.analyzer import VisionEngines

_SETTLE_STEP_S = 0.02  # a settled marker goes out when the settled media time has moved this far

# A Moonshine bundle's tokenizer and a Whisper bundle's: context carries over a switch only within one kind.
TOKENIZER_ROLES = ("asr-tokenizer", "asr-whisper-tokenizer")


@dataclass
class Engines:
    """The models of one bundle, loaded once and shared by all streams."""

    bundle: VerifiedBundle
    profile: EngineProfile
    asr: MoonshineAsr | WhisperAsr | None
    labeller: ImageLabeller | None
    faces: FaceDetector | None = None  # video path (issue 5): people in view
    reader: TextReader | None = None  # video path (issue 5): on-screen text, read on scene changes

    @classmethod
    def load(cls, bundle: VerifiedBundle, config: RunConfig) -> Engines:
        profile = EngineProfile(tuple(config.engine.providers), config.engine.threads_per_engine,
                                config.engine.backend)
        # A bundle with the asr-whisper-* roles (python -m edgeomni.export.whisper) captions with Whisper (issue 6).
        asr_cls = WhisperAsr if bundle.manifest.has_role("asr-whisper-encoder") else MoonshineAsr
        asr = asr_cls(bundle, profile) if config.speech.enabled else None
        labeller_role = "image-labeller" if config.visual.labeller == "int8" else "image-labeller-fp32"
        wants_labels = config.visual.enabled and bundle.manifest.has_role(labeller_role)
        labeller = ImageLabeller(bundle, profile, labeller_role) if wants_labels else None
        visual = config.visual
        faces = FaceDetector(bundle, profile) if visual.enabled and visual.faces and bundle.manifest.has_role(
            "face-detector") else None
        wants_ocr = visual.enabled and visual.ocr and all(
            bundle.manifest.has_role(r) for r in ("ocr-detector", "ocr-recognizer", "ocr-dictionary"))
        reader = TextReader(bundle, profile) if wants_ocr else None
        return cls(bundle, profile, asr, labeller, faces, reader)

    @property
    def vision(self) -> VisionEngines:
        return VisionEngines(self.labeller, self.faces, self.reader)

    @property
    def backends(self) -> dict[str, dict[str, Any]]:
        """Per role with a choice of backend (TensorRT engine/EP, CUDA, CPU): what runs and why others were
        skipped (issue 6); reported in the `start` record."""
        engines = [self.labeller, self.asr, *((self.reader.detector, self.reader.recognizer) if self.reader else ())]
        choices = [choice for engine in engines if (choice := getattr(engine, "backend", None)) is not None]
        return {c.role: {**c.to_dict(), "summary": c.summary} for c in choices}

    def new_vad(self) -> SileroVad:
        return SileroVad(self.bundle, self.profile)

    @property
    def tag(self) -> str:
        """`name@version` of the bundle, stamped on every caption event (OTA makes it change mid-stream)."""
        return f"{self.bundle.manifest.name}@{self.bundle.manifest.version}"

    def same_tokenizer(self, other: Engines) -> bool:
        """Whether the speech context (the previous utterance's tokens) still means the same after a switch:
        the same kind of ASR (Moonshine or Whisper) with a byte-identical tokenizer file."""
        mine, theirs = self.bundle.manifest, other.bundle.manifest
        return any(mine.has_role(role) and theirs.has_role(role)
                   and mine.by_role(role).sha256 == theirs.by_role(role).sha256 for role in TOKENIZER_ROLES)


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
                 stream: str = "main", frame_tap: Callable[[AudioFrame | VideoFrame], None] | None = None) -> None:
        self.source, self.engines, self.sinks, self.config = source, engines, sinks, config
        self.executor, self.stream = executor, stream
        self.frame_tap = frame_tap  # sees every frame (the outbox keeps recent audio for hard examples); O(1)
        self.clock = MediaClock()
        self._tally = _Tally()
        self._stop = asyncio.Event()
        self._speech: SpeechCaptioner | None = None
        self._visual: VisualTagger | None = None
        self._bundle_tags = {"speech": engines.tag, "visual": engines.tag}  # which bundle each head runs now
        self._switch_events: set[asyncio.Task[None]] = set()
        self._settled_sent = -math.inf  # the last settled time told to the sinks

    def stop(self) -> None:
        """Ask the pipeline to end as if the source had ended: in-flight speech still gets its final."""
        self._stop.set()

    async def run(self) -> dict[str, Any]:
        speech: SpeechCaptioner | None = None
        visual: VisualTagger | None = None
        realtime = self.source.paced or self.source.live
        if self.engines.asr is not None and self.source.has_audio:
            speech = SpeechCaptioner(self.stream, self.engines.new_vad(), self.engines.asr, self.config.speech,
                                     self.executor, self._emit, self.clock, realtime=realtime)
        if self.engines.vision.any and self.source.has_video:
            visual = VisualTagger(self.stream, self.engines.vision, self.config.visual, self._emit, self.clock,
                                  realtime=realtime)
        self._speech, self._visual = speech, visual
        self._bundle_tags = {"speech": self.engines.tag, "visual": self.engines.tag}
        started_cpu, started_at = time.process_time(), time.monotonic()
        media_end, last_arrival, error, started = 0.0, time.monotonic(), None, False
        try:
            async for frame in self.source.frames():
                if not started:
                    started = True
                    await self._start()
                last_arrival = frame.arrival
                if self.frame_tap is not None:
                    self.frame_tap(frame)
                self.sinks.push_frame(self.stream, frame)  # sinks that write media (video:, issue 5)
                if isinstance(frame, AudioFrame):
                    media_end = max(media_end, frame.end)
                    if speech is not None:
                        await speech.push(frame)
                else:
                    media_end = max(media_end, frame.pts)
                    if visual is not None:
                        await visual.push(frame)
                await self._settle(realtime)
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
        await self.sinks.settle(self.stream, math.inf, realtime)  # every caption is out
        wall = time.monotonic() - started_at  # (was `started`, which the loop reuses as a flag: wall read ~uptime)
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

    async def _settle(self, realtime: bool) -> None:
        """Tell sinks that draw onto frames how far the captions are complete. An unpaced source (a file read
        as fast as possible) also waits here while such a sink holds its fill of frames: nothing is dropped."""
        if not self.sinks.wants_settled:
            return  # nobody draws onto frames: no per-frame work
        while True:
            heads = [head.settled_until() for head in (self._speech, self._visual) if head is not None]
            settled = min(heads, default=math.inf)
            if settled - self._settled_sent >= _SETTLE_STEP_S:  # (inf - inf is nan: sent once)
                self._settled_sent = settled
                await self.sinks.settle(self.stream, settled, realtime)
            if realtime or not self.sinks.backlogged:
                return
            await asyncio.sleep(0.02)  # the heads are still working on what the sink holds

    async def _start(self) -> None:
        self.clock.origin = self.source.started_monotonic or time.monotonic()
        await self.sinks.publish({"type": "start", "stream": self.stream, "source": self.source.spec,
                                  "wall": self.source.started_wall or time.time(),
                                  "describe": self.source.describe(), "bundle": self.engines.tag,
                                  "backend": self.engines.backends})

    async def _emit(self, event: CaptionEvent) -> None:
        self._tally.add(event)
        payload = event.to_dict()
        payload["bundle"] = self._bundle_tags["visual" if event.type == "visual" else "speech"]
        await self.sinks.publish(payload)

    def use_engines(self, engines: Engines, vad: SileroVad | None = None) -> None:
        """Move this stream to another bundle's engines (OTA). Each head switches at its next pause: speech
        between utterances, vision between blocks; the stream never stops and no utterance mixes models.
        `vad`: this stream's new VAD, made off the loop by the caller (creating a session takes ~45 ms)."""
        previous, self.engines = self.engines, engines
        if self._speech is not None and engines.asr is not None:
            self._speech.use_engines(engines.asr, vad or engines.new_vad(),
                                     keep_context=previous.same_tokenizer(engines),
                                     applied=lambda: self._switched("speech", engines.tag))
        if self._visual is not None and engines.labeller is not None:
            self._visual.use_labeller(engines.labeller, applied=lambda: self._switched("visual", engines.tag))

    def _switched(self, head: str, tag: str) -> None:
        previous, self._bundle_tags[head] = self._bundle_tags[head], tag
        event = {"type": "ota", "status": "switched", "stream": self.stream, "head": head, "bundle": tag,
                 "previous": previous, "emitted": round(self.clock.now(), 3)}
        task = asyncio.get_running_loop().create_task(self.sinks.publish(event))
        self._switch_events.add(task)  # keep a reference until it is published
        task.add_done_callback(self._switch_events.discard)

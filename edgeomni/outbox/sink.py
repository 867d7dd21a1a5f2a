"""OutboxSink: the pipeline's events -> outbox records. A SinkSet sink, so it can never slow the captions.

Records (see docs/ARCHITECTURE.md, "Outbox and sync"):
- caption: every final and visual note (partials are superseded by their final and are not kept);
- metrics: per-stage latency percentiles every `metrics_interval_s`, and the end summary's;
- counters: the end summary's degradation counters and sink drops;
- error: stream errors;
- hard_example (opt-in), two modalities:
  speech: a final under the confidence threshold, with its audio as 16 kHz WAV and a PNG thumbnail of the
  latest video frame; vision: a visual note whose top label scores under `hard_image_below`, with the frame
  it was about as a PNG (shorter side `hard_image_side`), at most one per `hard_image_every_s`. Audio and
  frames come from small rings fed by `tap(frame)`, which the pipeline calls for every frame it reads.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

from edgeomni.events import Event, Record
from edgeomni.frames import AudioFrame, VideoFrame
from edgeomni.outbox.config import OutboxConfig
from edgeomni.outbox.media import AudioRing, FrameRing, frame_png, png_thumbnail, wav_bytes
from edgeomni.outbox.store import Outbox
from edgeomni.sinks.base import Sink
from edgeomni.telemetry import percentiles

_CAPTION_FIELDS = ("stream", "type", "text", "start", "end", "emitted", "latency_ms", "confidence")


class OutboxSink(Sink):
    name = "outbox"

    def __init__(self, outbox: Outbox, config: OutboxConfig) -> None:
        self.outbox, self.config = outbox, config
        self.written = 0
        self._audio = AudioRing(config.hard_example_max_s + 20.0) if config.hard_examples else None
        self._last_image: VideoFrame | None = None
        self._frames = FrameRing() if config.hard_examples else None
        self._last_hard_image: float | None = None  # media time of the last hard frame kept
        self._window: dict[str, list[float]] = {}
        self._window_started = time.monotonic()
        self._source = ""

    def tap(self, frame: AudioFrame | VideoFrame) -> None:
        """Called by the pipeline for each frame (on the event loop: must stay O(1))."""
        if self._audio is None or self._frames is None:
            return
        if isinstance(frame, AudioFrame):
            self._audio.push(frame)
        else:
            self._last_image = frame
            self._frames.push(frame)

    async def send(self, typed: Event) -> None:
        event = typed.to_dict()  # the outbox keeps records in their JSONL form
        records = self._records_for(event)
        frame = self._hard_frame(event)
        if frame is not None:  # PNG-encoding a frame takes milliseconds: not on the event loop
            records.append(("hard_example", await asyncio.to_thread(self._hard_image, event, frame)))
        if event.get("type") == "end":  # what the retention policy dropped so far travels with the run's counters
            stats = await asyncio.to_thread(self.outbox.stats)
            for kind, data in records:
                if kind == "counters":
                    data["outbox_dropped"] = stats["dropped"]
        if time.monotonic() - self._window_started >= self.config.metrics_interval_s or event.get("type") == "end":
            records.extend(self._flush_window())
        if records:
            # sqlite with synchronous=FULL fsyncs on commit: do it off the event loop.
            await asyncio.to_thread(self.outbox.append_many, records)
            self.written += len(records)

    def _records_for(self, event: Record) -> list[tuple[str, dict[str, Any]]]:
        kind = event.get("type")
        if kind in ("partial", "final", "visual") and "latency_ms" in event:
            self._window.setdefault(str(kind), []).append(float(event["latency_ms"]))
        if kind == "start":
            self._source = str(event.get("source", ""))
            return []
        if kind in ("final", "visual"):
            caption = {k: event[k] for k in _CAPTION_FIELDS if k in event}
            caption["source"] = self._source
            records: list[tuple[str, dict[str, Any]]] = [("caption", caption)]
            if kind == "final" and self._is_hard(event):
                records.append(("hard_example", self._hard_example(event)))
            return records
        if kind == "error":
            return [("error", {"stream": event.get("stream", ""), "source": self._source,
                               "message": str(event.get("message", ""))})]
        if kind == "end":
            common = {"stream": event.get("stream", ""), "source": event.get("source", self._source)}
            summary = {key: event.get(key) for key in ("media_seconds", "wall_seconds", "rtf", "cpu_seconds",
                                                        "finals", "partials", "visuals")}
            return [("metrics", {**common, "scope": "run", "latency_ms": event.get("latency_ms", {}), **summary}),
                    ("counters", {**common, "counters": event.get("counters", {}),
                                  "sink_drops": event.get("sink_drops", {}), "error": event.get("error"),
                                  "sink_failures": event.get("sink_failures", {})})]
        return []

    def _flush_window(self) -> list[tuple[str, dict[str, Any]]]:
        window, self._window = self._window, {}
        seconds = time.monotonic() - self._window_started
        self._window_started = time.monotonic()
        if not window:
            return []
        return [("metrics", {"scope": "window", "source": self._source, "window_s": round(seconds, 3),
                             "latency_ms": {stage: percentiles(values) for stage, values in window.items()}})]

    def _is_hard(self, event: Record) -> bool:
        confidence = event.get("confidence")
        return self._audio is not None and confidence is not None and confidence < self.config.hard_example_below

    def _hard_example(self, event: Record) -> dict[str, Any]:
        assert self._audio is not None
        start = float(event["start"])
        end = min(float(event["end"]), start + self.config.hard_example_max_s)
        audio = self._audio.cut(start, end)
        example: dict[str, Any] = {
            "modality": "speech", "stream": event.get("stream", ""), "source": self._source,
            "text": event.get("text", ""),
            "confidence": event.get("confidence"), "start": start, "end": end,
            "audio_seconds": round(len(audio) / 16000, 3),
            "audio_wav_b64": base64.b64encode(wav_bytes(audio)).decode(),
        }
        if self._last_image is not None:
            example["thumbnail_png_b64"] = base64.b64encode(png_thumbnail(self._last_image.image)).decode()
        return example

    def _hard_frame(self, event: Record) -> VideoFrame | None:
        """The frame a visual note was about, when the note is unsure enough (and the last hard frame is old
        enough) to be kept as a hard example."""
        labels = event.get("labels") or []
        if self._frames is None or event.get("type") != "visual" or not labels:
            return None
        if float(labels[0]["score"]) >= self.config.hard_image_below:
            return None
        end = float(event["end"])
        if self._last_hard_image is not None and end - self._last_hard_image < self.config.hard_image_every_s:
            return None
        frame = self._frames.at(end)
        if frame is not None:
            self._last_hard_image = end
        return frame

    def _hard_image(self, event: Record, frame: VideoFrame) -> dict[str, Any]:
        png = frame_png(frame.image, self.config.hard_image_side)
        labels = event.get("labels") or []
        return {
            "modality": "vision", "stream": event.get("stream", ""), "source": self._source,
            "text": event.get("text", ""), "confidence": float(labels[0]["score"]), "labels": labels[:5],
            "start": float(event["start"]), "end": float(event["end"]), "scene": event.get("scene"),
            "frame_pts": round(frame.pts, 3),
            "frame_size": [int(frame.image.shape[1]), int(frame.image.shape[0])],
            "image_png_b64": base64.b64encode(png).decode(),
        }

"""Every record kind the runtime emits, typed, and the one place they become JSON objects (the JSONL contract).

A stream's records, in order: one `StartEvent`, then `PartialEvent`s, `FinalEvent`s and `VisualEvent`s as they
happen (with `OtaEvent`s when a bundle update arrives and `ErrorEvent` if the source fails), then one `EndEvent`.
Sinks receive these objects; `to_dict()` gives the wire form (JSONL lines, data-channel messages, outbox rows)
whose keys and their order are a stable contract: later versions add keys, never rename or reorder them.
`Settled` is not a record: it tells sinks that draw onto frames how far a stream's captions are complete.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar, Self

Record = dict[str, Any]


class MediaClock:
    """Seconds since the source began delivering media, on the monotonic clock.

    With real-time pacing this runs in step with the media's own timeline, so `emitted - end` reads
    directly as how far behind the caption is.
    """

    def __init__(self, origin: float | None = None) -> None:
        self.origin = time.monotonic() if origin is None else origin

    def now(self) -> float:
        return time.monotonic() - self.origin


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """A record for the sinks. Subclasses name their `type` and list their keys in contract order."""

    type: ClassVar[str] = ""
    stream: str = ""

    def to_dict(self) -> Record:
        raise NotImplementedError


def to_json(event: Event) -> str:
    """One JSONL line (without the newline): UTF-8 text kept as is, so captions in any script stay readable."""
    return json.dumps(event.to_dict(), ensure_ascii=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class StartEvent(Event):
    type: ClassVar[str] = "start"
    source: str
    wall: float  # the source's first delivery, Unix time
    describe: str
    bundle: str
    backend: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> Record:
        return {"type": self.type, "stream": self.stream, "source": self.source, "wall": self.wall,
                "describe": self.describe, "bundle": self.bundle, "backend": self.backend}


@dataclass(frozen=True, slots=True, kw_only=True)
class CaptionEvent(Event):
    """What was said or shown over media seconds [start, end]. `emitted` is media-clock seconds when the event left
    the runtime; `latency_ms` is emission time minus delivery time of the last sample/frame the event covers.
    `bundle` (name@version) is stamped by the pipeline: the bundle whose engines produced it."""

    text: str
    start: float
    end: float
    emitted: float
    latency_ms: float
    bundle: str = ""

    @classmethod
    def stamped(cls, *, stream: str, text: str, start: float, end: float, last_arrival: float, clock: MediaClock,
                **fields: Any) -> Self:
        now = time.monotonic()
        return cls(stream=stream, text=text, start=round(start, 3), end=round(end, 3),
                   emitted=round(now - clock.origin, 3), latency_ms=round((now - last_arrival) * 1000.0, 1), **fields)

    def with_bundle(self, bundle: str) -> Self:
        return replace(self, bundle=bundle)

    def _head(self) -> Record:
        return {"type": self.type, "stream": self.stream, "text": self.text, "start": self.start, "end": self.end,
                "emitted": self.emitted, "latency_ms": self.latency_ms}


@dataclass(frozen=True, slots=True, kw_only=True)
class PartialEvent(CaptionEvent):
    """The words heard so far in an utterance still in progress: `committed` never changes again, `tentative` may."""

    type: ClassVar[str] = "partial"
    committed: str = ""
    tentative: str = ""

    def to_dict(self) -> Record:
        return {**self._head(), "committed": self.committed, "tentative": self.tentative, "bundle": self.bundle}


@dataclass(frozen=True, slots=True, kw_only=True)
class FinalEvent(CaptionEvent):
    """An utterance's caption, never changed again. `confidence`: mean token log-probability (None where the text is
    what partials committed); `split`: the utterance was cut at a quiet point because it ran too long."""

    type: ClassVar[str] = "final"
    committed: str = ""
    tentative: str = ""
    confidence: float | None = None
    split: bool = False

    def to_dict(self) -> Record:
        return {**self._head(), "committed": self.committed, "tentative": self.tentative,
                "confidence": self.confidence, "split": self.split, "bundle": self.bundle}


@dataclass(frozen=True, slots=True, kw_only=True)
class VisualEvent(CaptionEvent):
    """A screen note: labels, people in view and on-screen text of a block of frames, emitted when they change."""

    type: ClassVar[str] = "visual"
    labels: list[dict[str, Any]] = field(default_factory=list)  # [{"label": name, "score": 0..1}], best first
    faces: int | None = None  # None: the bundle or config has no face detector
    ocr: list[str] = field(default_factory=list)
    scene_change: bool = False
    scene: int = 0

    def to_dict(self) -> Record:
        return {**self._head(), "labels": self.labels, "faces": self.faces, "ocr": self.ocr,
                "scene_change": self.scene_change, "scene": self.scene, "bundle": self.bundle}


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorEvent(Event):
    """The stream failed (its captions so far are kept; an `EndEvent` follows), or a message was refused."""

    type: ClassVar[str] = "error"
    message: str
    code: str | None = None  # a short machine-readable reason where a client acts on it (WebRTC sessions)

    def to_dict(self) -> Record:
        record: Record = {"type": self.type, "stream": self.stream}
        if self.code is not None:
            record["code"] = self.code
        record["message"] = self.message
        return record


@dataclass(frozen=True, slots=True, kw_only=True)
class EndEvent(Event):
    """The stream's summary: media covered, counts, latency percentiles per caption kind, compute and drops."""

    type: ClassVar[str] = "end"
    source: str
    media_seconds: float
    wall_seconds: float
    finals: int
    partials: int
    visuals: int
    latency_ms: dict[str, dict[str, float]]
    rtf: float | None
    cpu_seconds: float
    counters: dict[str, Any]
    sink_drops: dict[str, int]
    error: str | None
    # per sink that failed: {"failures", "lost", "gave_up", "last_error"} (SinkSet.failure_report)
    sink_failures: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> Record:
        return {"type": self.type, "stream": self.stream, "source": self.source,
                "media_seconds": self.media_seconds, "wall_seconds": self.wall_seconds, "finals": self.finals,
                "partials": self.partials, "visuals": self.visuals, "latency_ms": self.latency_ms, "rtf": self.rtf,
                "cpu_seconds": self.cpu_seconds, "counters": self.counters, "sink_drops": self.sink_drops,
                "error": self.error, "sink_failures": self.sink_failures}


OTA_STATUSES = ("downloading", "verified", "installed", "refused", "switched")


@dataclass(frozen=True, slots=True, kw_only=True)
class OtaEvent(Event):
    """A bundle update: `downloading`, `verified` (signature and files checked, engines loading), `installed`,
    `refused` (with `reason`), and per stream and head `switched` (that head now runs `bundle`).
    Keys that do not apply to a status are left out."""

    type: ClassVar[str] = "ota"
    status: str
    bundle: str | None  # name@version announced (None: an announcement too broken to name one)
    head: str | None = None
    running: str | None = None
    previous: str | None = None
    url: str | None = None
    path: str | None = None
    reason: str | None = None
    emitted: float | None = None

    def to_dict(self) -> Record:
        record: Record = {"type": self.type, "status": self.status}
        if self.stream:
            record["stream"] = self.stream
        if self.head is not None:
            record["head"] = self.head
        record["bundle"] = self.bundle
        for key in ("running", "previous", "url", "path", "reason", "emitted"):
            value = getattr(self, key)
            if value is not None:
                record[key] = value
        return record


@dataclass(frozen=True, slots=True, kw_only=True)
class Settled(Event):
    """Every caption of `stream` that starts before `media` seconds has been sent (in order with the captions)."""

    type: ClassVar[str] = "settled"
    media: float
    realtime: bool

    def to_dict(self) -> Record:
        return {"type": self.type, "stream": self.stream, "media": self.media, "realtime": self.realtime}


RECORD_KINDS: dict[str, type[Event]] = {kind.type: kind for kind in (
    StartEvent, PartialEvent, FinalEvent, VisualEvent, ErrorEvent, EndEvent, OtaEvent, Settled)}


def from_record(record: Record) -> Event:
    """The typed event a wire record stands for (a JSONL line read back); `to_dict()` gives the record again.
    An unknown `type`, a key the kind does not have, or a missing one is a ValueError naming it."""
    kind = RECORD_KINDS.get(record.get("type"))  # type: ignore[arg-type]
    if kind is None:
        raise ValueError(f"record type: expected one of {sorted(RECORD_KINDS)}, got {record.get('type')!r}")
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(record) - known - {"type"})
    if unknown:
        raise ValueError(f"{kind.type} record: unknown key(s) {unknown} (known: {sorted(known)})")
    try:
        return kind(**{key: value for key, value in record.items() if key != "type"})
    except TypeError as exc:
        raise ValueError(f"{kind.type} record: {exc}") from None


__all__ = [
    "OTA_STATUSES",
    "RECORD_KINDS",
    "CaptionEvent",
    "EndEvent",
    "ErrorEvent",
    "Event",
    "FinalEvent",
    "MediaClock",
    "OtaEvent",
    "PartialEvent",
    "Record",
    "Settled",
    "StartEvent",
    "VisualEvent",
    "from_record",
    "to_json",
]

"""Caption events and the media clock they are stamped with (the JSONL contract lives here)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


class MediaClock:
    """Seconds since the source began delivering media, on the monotonic clock.

    With real-time pacing this runs in step with the media's own timeline, so `emitted - end` reads
    directly as how far behind the caption is.
    """

    def __init__(self, origin: float | None = None) -> None:
        self.origin = time.monotonic() if origin is None else origin

    def now(self) -> float:
        return time.monotonic() - self.origin


@dataclass(slots=True)
class CaptionEvent:
    type: str  # "partial" | "final" | "visual"
    stream: str
    text: str
    start: float  # media seconds covered by the event
    end: float
    emitted: float  # media-clock seconds when the event left the runtime
    latency_ms: float  # emission time minus delivery time of the last sample/frame the event covers
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def stamped(cls, type: str, stream: str, text: str, start: float, end: float, last_arrival: float,
                clock: MediaClock, **extra: Any) -> CaptionEvent:
        now = time.monotonic()
        return cls(type, stream, text, round(start, 3), round(end, 3), round(now - clock.origin, 3),
                   round((now - last_arrival) * 1000.0, 1), extra)

    def to_dict(self) -> dict[str, Any]:
        base = {"type": self.type, "stream": self.stream, "text": self.text, "start": self.start, "end": self.end,
                "emitted": self.emitted, "latency_ms": self.latency_ms}
        base.update(self.extra)
        return base

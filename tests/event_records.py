"""Typed events from short records in tests: the keys a test does not care about get neutral values."""

from __future__ import annotations

from typing import Any

from edgeomni.events import RECORD_KINDS, Event, from_record

_NEUTRAL: dict[str, dict[str, Any]] = {
    "start": {"stream": "main", "source": "test", "wall": 0.0, "describe": "", "bundle": ""},
    "caption": {"stream": "main", "text": "", "start": 0.0, "end": 0.0, "emitted": 0.0, "latency_ms": 0.0},
    "end": {"stream": "main", "source": "test", "media_seconds": 0.0, "wall_seconds": 0.0, "finals": 0,
            "partials": 0, "visuals": 0, "latency_ms": {}, "rtf": None, "cpu_seconds": 0.0, "counters": {},
            "sink_drops": {}, "error": None},
    "error": {"stream": "main", "message": ""},
}


def event(record: dict[str, Any]) -> Event:
    kind = record["type"]
    assert kind in RECORD_KINDS, kind
    neutral = _NEUTRAL.get("caption" if kind in ("partial", "final", "visual") else kind, {})
    return from_record({**neutral, **record})

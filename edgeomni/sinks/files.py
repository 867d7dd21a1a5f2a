"""File sinks: JSONL (one object per line, flushed per event), WebVTT and SRT subtitles."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from edgeomni.errors import SinkError
from edgeomni.events import Event, FinalEvent, VisualEvent, to_json
from edgeomni.sinks.base import Sink


def _open(path: str, kind: str) -> TextIO:
    if path == "-":
        return sys.stdout
    target = Path(path).expanduser()
    if not target.parent.is_dir():
        raise SinkError(f"{kind} sink: directory {target.parent} does not exist (for {path})")
    try:
        return target.open("w", encoding="utf-8")
    except OSError as exc:
        raise SinkError(f"{kind} sink: cannot write {path}: {exc.strerror}") from None


class JsonlSink(Sink):
    def __init__(self, path: str) -> None:
        self.name = f"jsonl:{path}"
        self._out = _open(path, "jsonl")

    async def send(self, event: Event) -> None:
        self._out.write(to_json(event) + "\n")
        self._out.flush()

    async def close(self) -> None:
        if self._out is not sys.stdout:
            self._out.close()


class SubtitleSink(Sink):
    """Finals and visual notes as cues, written as they happen so a player can follow the file live."""

    def __init__(self, path: str, fmt: str) -> None:
        self.name = f"{fmt}:{path}"
        self._fmt = fmt
        self._out = _open(path, fmt)
        self._count = 0
        if fmt == "vtt":
            self._out.write("WEBVTT\n\n")
            self._out.flush()

    async def send(self, event: Event) -> None:
        if not isinstance(event, FinalEvent | VisualEvent) or not event.text:
            return
        self._count += 1
        text = event.text if isinstance(event, FinalEvent) else f"[screen] {event.text}"
        start, end = event.start, max(event.end, event.start + 0.5)
        sep = "." if self._fmt == "vtt" else ","
        timing = f"{_stamp(start, sep)} --> {_stamp(end, sep)}"
        prefix = "" if self._fmt == "vtt" else f"{self._count}\n"
        self._out.write(f"{prefix}{timing}\n{text}\n\n")
        self._out.flush()

    async def close(self) -> None:
        if self._out is not sys.stdout:
            self._out.close()


def _stamp(seconds: float, sep: str) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{millis:03d}"

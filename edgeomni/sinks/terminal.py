"""A live terminal display: captions as they are spoken, with their media time and latency."""

from __future__ import annotations

import shutil
import sys
from typing import TextIO

from edgeomni.events import EndEvent, ErrorEvent, Event, FinalEvent, PartialEvent, StartEvent, VisualEvent
from edgeomni.sinks.base import Sink


class TerminalSink(Sink):
    name = "terminal"

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out or sys.stdout
        self._live = self._out.isatty()
        self._partial_shown = False

    async def send(self, event: Event) -> None:
        if isinstance(event, StartEvent):
            self._line(f"▶ {event.source} — {event.describe}".rstrip(" —"))
            if event.backend:  # where the engines run (TensorRT engine / EP, CUDA, CPU)
                self._line("  engines: " + _engines_line(event.backend))
        elif isinstance(event, PartialEvent):
            if self._live:
                self._out.write("\r\x1b[K" + _partial_line(event, shutil.get_terminal_size().columns))
                self._out.flush()
                self._partial_shown = True
        elif isinstance(event, FinalEvent):
            self._line(f"[{_clock(event.start)} → {_clock(event.end)}] {event.text}  ({event.latency_ms:.0f} ms)")
        elif isinstance(event, VisualEvent):
            self._line(f"[{_clock(event.start)} screen] {event.text}  ({event.latency_ms:.0f} ms)")
        elif isinstance(event, ErrorEvent):
            self._line(f"! {event.message}")
        elif isinstance(event, EndEvent):
            self._line(_summary(event))

    def _line(self, text: str) -> None:
        if self._partial_shown:
            self._out.write("\r\x1b[K")
            self._partial_shown = False
        self._out.write(text + "\n")
        self._out.flush()


def _partial_line(event: PartialEvent, width: int) -> str:
    """Committed words plain, tentative ones dimmed; clipped from the left to one line, because a wrapped
    line could no longer be overwritten in place."""
    committed = event.committed
    tentative = event.tentative if committed or event.tentative else event.text
    text = f"{committed} {tentative}" if committed and tentative else committed or tentative
    room = max(10, width - 5)
    start = max(0, len(text) - room)
    split = len(committed)
    head, tail = text[start:split] if start < split else "", text[max(start, split) :]
    return f"  {'…' if start else ''}{head}\x1b[2m{tail}\x1b[0m"


def _engines_line(backends: dict[str, dict[str, str]]) -> str:
    """`image-labeller, ocr-detector on onnxruntime CPU (...)`: roles that run the same way share one entry."""
    grouped: dict[str, list[str]] = {}
    for role, choice in backends.items():
        grouped.setdefault(choice["summary"].removeprefix(f"{role} on "), []).append(role)
    return ", ".join(f"{', '.join(roles)} on {where}" for where, roles in grouped.items())


def _clock(seconds: float) -> str:
    minutes, secs = divmod(float(seconds), 60.0)
    return f"{int(minutes):02d}:{secs:04.1f}"


def _summary(event: EndEvent) -> str:
    parts = [f"■ done: {event.finals} captions, {event.visuals} screen notes",
             f"media {event.media_seconds:.1f} s in {event.wall_seconds:.1f} s"]
    final = event.latency_ms.get("final")
    if final:
        parts.append(f"final latency p50 {final['p50']:.0f} ms / p95 {final['p95']:.0f} ms")
    if event.rtf is not None:
        parts.append(f"RTF {event.rtf:.3f}")
    return " · ".join(parts)

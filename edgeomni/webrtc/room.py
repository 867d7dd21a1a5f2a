"""Caption fan-out: every participant's captions go to every participant in the same room.

Each participant has its own CaptionChannel (a bounded queue drained into its `captions` data channel),
so one slow or stuck receiver only loses its own events and never delays the pipelines or the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from edgeomni.events import EndEvent, Event, MediaClock, Record
from edgeomni.sinks.base import Sink
from edgeomni.webrtc.metrics import SessionMetrics

CHANNEL_LABEL = "captions"
QUEUE_DEPTH = 256
# Above this much unsent data in the SCTP buffer, the receiver is not keeping up: partials (superseded
# anyway) are skipped for it rather than queued behind.
BUFFERED_LIMIT_BYTES = 256 * 1024
# Events that concern only the participant whose pipeline produced them.
PRIVATE_TYPES = {"error", "end"}
CAPTION_TYPES = {"partial", "final", "visual"}


class CaptionChannel:
    """One receiver: events wait here until its data channel is open, then go out in order."""

    def __init__(self, stream: str, clock: MediaClock, metrics: SessionMetrics) -> None:
        self.stream, self.clock, self.metrics = stream, clock, metrics
        self.channel: Any = None
        self._items: deque[Record] = deque()
        self._wake = asyncio.Event()
        self._closed = False
        self._task = asyncio.create_task(self._drain(), name=f"webrtc-captions:{stream}")

    def bind(self, channel: Any) -> None:
        self.channel = channel
        channel.on("open", self._wake.set)
        self._wake.set()

    def offer(self, event: Record) -> None:
        """Never blocks: when full, a partial is skipped, otherwise the oldest queued event makes room."""
        if self._closed:
            return
        if len(self._items) >= QUEUE_DEPTH:
            self.metrics.channel_drops += 1
            if event.get("type") == "partial":
                return
            self._items.popleft()
        self._items.append(event)
        self._wake.set()

    async def flush(self, timeout: float) -> None:
        """Wait (bounded) until everything queued has been handed to the data channel."""
        deadline = time.monotonic() + timeout
        while self._items and self._open and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        self._closed = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    @property
    def _open(self) -> bool:
        return self.channel is not None and self.channel.readyState == "open"

    async def _drain(self) -> None:
        while True:
            while not (self._items and self._open):
                self._wake.clear()
                await self._wake.wait()
            event = self._items.popleft()
            if event.get("type") == "partial" and self.channel.bufferedAmount > BUFFERED_LIMIT_BYTES:
                self.metrics.channel_drops += 1
                continue
            if event.get("stream") == self.stream and event.get("type") in CAPTION_TYPES:
                # Audio arrival -> now: the pipeline's own latency plus the time the event spent queued here.
                queued_ms = (time.monotonic() - self.clock.origin - event["emitted"]) * 1000.0
                event = {**event, "sent_latency_ms": round(event["latency_ms"] + max(0.0, queued_ms), 1)}
                self.metrics.record_sent(event["type"], event["sent_latency_ms"])
            try:
                self.channel.send(json.dumps(event, ensure_ascii=False))
            except Exception:  # the channel closed under us; the session's own cleanup follows
                self._closed = True
                return
            self.metrics.events_sent += 1


class Room:
    """The participants of one meeting, by session id."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.channels: dict[str, CaptionChannel] = {}

    def broadcast(self, event: Record) -> None:
        origin = event.get("stream")
        for session_id, channel in list(self.channels.items()):
            if event.get("type") not in PRIVATE_TYPES or session_id == origin:
                channel.offer(event)


class RoomSink(Sink):
    """The pipeline's sink: stamps who spoke and hands the event to the room."""

    def __init__(self, room: Room, session_id: str, participant: str, end_extras: Callable[[], Record]) -> None:
        self.name = f"webrtc:{session_id}"
        self.room, self.session_id, self.participant = room, session_id, participant
        self.end_extras = end_extras

    async def send(self, event: Event) -> None:
        stamped = {**event.to_dict(), "participant": self.participant, "session": self.session_id}
        if isinstance(event, EndEvent):
            stamped.update(self.end_extras())  # the session's transport and delivery metrics
        self.room.broadcast(stamped)

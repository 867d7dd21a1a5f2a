"""The head seam: what turns one stream's frames of one kind into caption events.

A head is made per stream by its class's `open` (None when it has nothing to do: no model for it in the bundle, or
no frames of its kind in the source), receives every frame of its `frame_type`, publishes typed events through its
context, and on a bundle switch moves *all* of its models at its own next pause. Heads the runtime runs are listed
in `edgeomni.captions.HEADS`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from edgeomni.config import RunConfig
from edgeomni.engines.bundle_engines import Engines
from edgeomni.events import Event, MediaClock
from edgeomni.frames import AudioFrame, VideoFrame
from edgeomni.sources.base import Source

Publish = Callable[[Event], Awaitable[None]]


@dataclass(frozen=True)
class HeadContext:
    """What a head of one stream works with. `publish` is the head's own: the pipeline stamps what it publishes
    with the bundle this head runs now."""

    stream: str
    config: RunConfig
    executor: Executor  # the shared inference pool
    publish: Publish
    clock: MediaClock
    realtime: bool  # paced or live input; False: a file read as fast as possible (outputs never depend on speed)


class Head(Protocol):
    name: ClassVar[str]  # "speech", "visual": the `head` of an OTA `switched` event
    frame_type: ClassVar[type[AudioFrame] | type[VideoFrame]]

    @classmethod
    def open(cls, engines: Engines, source: Source, context: HeadContext) -> Head | None: ...

    async def push(self, frame: Any) -> None: ...

    def settled_until(self) -> float:
        """Media time before which every event of this head is out (for sinks that draw onto frames)."""
        ...

    async def finish(self, last_arrival: float) -> None:
        """End of stream: everything pushed is turned into events before this returns."""
        ...

    async def cancel(self) -> None: ...

    def counters(self) -> dict[str, Any]: ...

    @property
    def compute_seconds(self) -> float: ...

    def switch(self, engines: Engines, previous: Engines, applied: Callable[[], None]) -> None:
        """Use `engines` from the head's next pause on (all of its models at once); call `applied` then."""
        ...


__all__ = ["Head", "HeadContext", "Publish"]

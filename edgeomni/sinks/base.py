"""The sink seam: where a stream's events go (terminal, files, the outbox, a WebRTC room, a video file)."""

from __future__ import annotations

from abc import ABC, abstractmethod

from edgeomni.events import Event
from edgeomni.frames import AudioFrame, VideoFrame


class Sink(ABC):
    """Receives every typed event of the streams it is attached to, in order, from its own queue (`SinkSet`).

    A sink that writes media overrides `push_frame` (decoded frames, called inline: it must not block). A sink
    that draws captions onto frames sets `wants_settled` and then also receives `Settled` markers through `send`.
    """

    name: str = "sink"
    wants_settled: bool = False

    @property
    def backlogged(self) -> bool:
        """True while the sink holds as many frames as it should; an unpaced source then waits for it."""
        return False

    @abstractmethod
    async def send(self, event: Event) -> None:
        """Deliver one event (start, partial, final, visual, ota, error, end; `Settled` if asked for)."""

    def push_frame(self, stream: str, frame: AudioFrame | VideoFrame) -> None:  # noqa: B027 - most sinks take none
        """A decoded frame of `stream`, for sinks that write media."""

    async def close(self) -> None:  # noqa: B027 - sinks without resources need no close
        pass


__all__ = ["Sink"]

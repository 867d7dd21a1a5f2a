"""The sink interface: where caption events go (terminal, files, sockets)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

Event = dict[str, Any]


class Sink(ABC):
    name: str = "sink"
    # Sinks that draw captions onto frames also get {"type": "settled", "stream", "media", "realtime"} through
    # send(), in order with the captions: every caption starting before `media` (seconds) has been sent.
    wants_settled: bool = False

    @property
    def backlogged(self) -> bool:
        """True while the sink holds as many frames as it should; an unpaced source then waits for it."""
        return False

    @abstractmethod
    async def send(self, event: Event) -> None:
        """Deliver one event (start, partial, final, visual, error or end)."""

    async def close(self) -> None:  # noqa: B027 - sinks without resources need no close
        pass

"""The sink interface: where caption events go (terminal, files, sockets)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

Event = dict[str, Any]


class Sink(ABC):
    name: str = "sink"

    @abstractmethod
    async def send(self, event: Event) -> None:
        """Deliver one event (start, partial, final, visual, error or end)."""

    async def close(self) -> None:  # noqa: B027 - sinks without resources need no close
        pass

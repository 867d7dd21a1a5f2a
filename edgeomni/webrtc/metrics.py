"""Per-session metrics: caption latency as sent (audio arrival at the server -> data-channel send), drops,
received bitrate. Read by /health and put into the session's `end` event."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from edgeomni.telemetry import percentiles


@dataclass
class SessionMetrics:
    started: float = field(default_factory=time.monotonic)
    sent_latency_ms: dict[str, list[float]] = field(default_factory=dict)
    events_sent: int = 0
    channel_drops: int = 0  # events this participant's channel could not take (it fell behind)
    bytes_received: int = 0
    packets_lost: int = 0
    _bitrate_window: tuple[float, int] = (0.0, 0)
    bitrate_kbps: float = 0.0

    def record_sent(self, kind: str, latency_ms: float) -> None:
        self.sent_latency_ms.setdefault(kind, []).append(round(latency_ms, 1))

    def update_transport(self, bytes_received: int, packets_lost: int) -> None:
        """Bitrate over the interval since the previous update (the server polls every couple of seconds)."""
        now = time.monotonic()
        then, before = self._bitrate_window
        if then and now > then:
            self.bitrate_kbps = round((bytes_received - before) * 8 / (now - then) / 1000, 1)
        self._bitrate_window = (now, bytes_received)
        self.bytes_received, self.packets_lost = bytes_received, packets_lost

    def summary(self, source_counters: dict[str, int]) -> dict[str, Any]:
        elapsed = time.monotonic() - self.started
        return {
            "uptime_s": round(elapsed, 1),
            "sent_latency_ms": {kind: percentiles(v) for kind, v in self.sent_latency_ms.items()},
            "events_sent": self.events_sent,
            "channel_drops": self.channel_drops,
            "bytes_received": self.bytes_received,
            "bitrate_kbps": self.bitrate_kbps,
            "mean_bitrate_kbps": round(self.bytes_received * 8 / elapsed / 1000, 1) if elapsed else 0.0,
            "packets_lost": self.packets_lost,
            **source_counters,
        }

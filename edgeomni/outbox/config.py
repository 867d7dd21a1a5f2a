"""`[outbox]` config: where the device keeps its records until sync delivers them, and how much it may keep."""

from __future__ import annotations

from dataclasses import dataclass

from edgeomni.typed import check


@dataclass(frozen=True)
class OutboxConfig:
    """The device outbox (SQLite, WAL). Empty `path` = the cache default, used only when sync is on."""

    path: str = ""  # SQLite file; "" -> <cache>/outbox/outbox.sqlite
    max_mb: float = 256.0  # size bound; over it, the oldest telemetry goes first, hard examples last
    max_age_h: float = 24.0 * 7  # records older than this are dropped (hard examples get 4x longer)
    hard_examples: bool = False  # opt-in: unsure finals + their audio, unsure visual notes + their frame (user data)
    hard_example_below: float = -0.35  # a final whose mean token log-prob is under this is a hard example
    hard_example_max_s: float = 15.0  # audio kept per hard example
    hard_image_below: float = 0.5  # a visual note whose top label scores under this is a hard example (its frame)
    hard_image_every_s: float = 10.0  # at most one hard frame per stream per this many media seconds
    hard_image_side: int = 256  # hard frames are kept with their shorter side scaled down to this
    metrics_interval_s: float = 10.0  # how often per-stage latency figures are written

    def validate(self, section: str = "outbox") -> None:
        check(1.0 <= self.max_mb <= 1_000_000, f"{section}.max_mb", "1..1000000 MB", self.max_mb)
        check(0.01 <= self.max_age_h <= 24 * 365, f"{section}.max_age_h", "0.01..8760 hours", self.max_age_h)
        check(-10.0 <= self.hard_example_below <= 0.0, f"{section}.hard_example_below",
              "a log-probability in [-10, 0]", self.hard_example_below)
        check(1.0 <= self.hard_example_max_s <= 60.0, f"{section}.hard_example_max_s", "1..60 s",
              self.hard_example_max_s)
        check(0.0 <= self.hard_image_below <= 1.0, f"{section}.hard_image_below", "a probability in [0, 1]",
              self.hard_image_below)
        check(0.0 <= self.hard_image_every_s <= 86_400, f"{section}.hard_image_every_s", "0..86400 s",
              self.hard_image_every_s)
        check(32 <= self.hard_image_side <= 2160, f"{section}.hard_image_side", "32..2160 pixels",
              self.hard_image_side)
        check(0.5 <= self.metrics_interval_s <= 3600, f"{section}.metrics_interval_s", "0.5..3600 s",
              self.metrics_interval_s)

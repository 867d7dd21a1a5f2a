"""`[metrics]` and `[telemetry]` config: where `edgeomni run` serves Prometheus metrics and health, and how the
Jetson telemetry is sampled."""

from __future__ import annotations

from dataclasses import dataclass

from edgeomni.typed import check

JETSON_MODES = ("auto", "off")


def parse_listen(value: str, where: str = "metrics.listen") -> tuple[str, int]:
    """`HOST:PORT`, `:PORT` or `PORT` (loopback), `[::1]:PORT` -> (host, port)."""
    text = value.strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    host = host.strip("[]") or "127.0.0.1"
    check(port.isdigit() and 0 <= int(port) <= 65535, where, "HOST:PORT with a port 0..65535 (e.g. 127.0.0.1:9108)",
          value)
    return host, int(port)


@dataclass(frozen=True)
class MetricsConfig:
    """`edgeomni run`'s metrics endpoint: /metrics (Prometheus), /health (liveness) and /ready (JSON)."""

    listen: str = ""  # HOST:PORT to serve on; "" = no endpoint (`--metrics HOST:PORT`)
    stall_s: float = 1.0  # /ready turns false when the source has delivered nothing for this long
    linger_s: float = 0.0  # after a finite source ends, keep serving until one more scrape (at most this long)

    def validate(self, section: str = "metrics") -> None:
        if self.listen:
            parse_listen(self.listen, f"{section}.listen")
        check(0.1 <= self.stall_s <= 3600, f"{section}.stall_s", "0.1..3600 s", self.stall_s)
        check(0.0 <= self.linger_s <= 3600, f"{section}.linger_s", "0..3600 s", self.linger_s)


@dataclass(frozen=True)
class TelemetryConfig:
    """Device telemetry next to the metrics: Jetson power rails, temperatures, GPU/EMC load, power mode."""

    jetson: str = "auto"  # "auto": read tegrastats where it exists (elsewhere: "not available", once); "off"
    interval_ms: int = 1000  # tegrastats sampling period
    tegrastats: str = "tegrastats"  # the command (PATH lookup) or its full path
    nvpmodel: str = "nvpmodel"  # queried for the power mode every `mode_every_s`
    mode_every_s: float = 30.0
    sysfs: str = "/sys"  # where jetson_clocks' pinned CPU clocks are read (scaling_min_freq == scaling_max_freq)

    def validate(self, section: str = "telemetry") -> None:
        check(self.jetson in JETSON_MODES, f"{section}.jetson", f"one of {', '.join(JETSON_MODES)}", self.jetson)
        check(100 <= self.interval_ms <= 60_000, f"{section}.interval_ms", "100..60000 ms", self.interval_ms)
        check(bool(self.tegrastats.strip()), f"{section}.tegrastats", "a command or path", self.tegrastats)
        check(1.0 <= self.mode_every_s <= 3600, f"{section}.mode_every_s", "1..3600 s", self.mode_every_s)


__all__ = ["JETSON_MODES", "MetricsConfig", "TelemetryConfig", "parse_listen"]

"""What `edgeomni run --metrics HOST:PORT` adds to a run: the /metrics, /health and /ready endpoint, the outbox's
series when the device keeps one, Jetson telemetry where tegrastats exists, and systemd's READY/WATCHDOG
notifications under a `Type=notify` unit."""

from __future__ import annotations

import sys
import time
from typing import Any

from edgeomni.config import RunConfig
from edgeomni.observability.config import parse_listen
from edgeomni.observability.health import MetricsServer, stream_check
from edgeomni.observability.metrics import RuntimeMetrics
from edgeomni.observability.outbox import OutboxCollector
from edgeomni.observability.systemd import SystemdNotifier
from edgeomni.observability.tegrastats import JetsonTelemetry
from edgeomni.runtime import Runtime
from edgeomni.sync.device import DeviceSync


class RunEndpoint:
    def __init__(self, runtime: Runtime, metrics: RuntimeMetrics, config: RunConfig,
                 device_sync: DeviceSync | None = None) -> None:
        self.runtime, self.metrics, self.config = runtime, metrics, config
        self.started = time.monotonic()
        if device_sync is not None:
            metrics.registry.register(OutboxCollector(device_sync.outbox, device_sync.worker))
        self.telemetry = JetsonTelemetry(config.telemetry)
        metrics.registry.register(self.telemetry)
        host, port = parse_listen(config.metrics.listen)
        self.server = MetricsServer(host, port, metrics, self.health, self.ready)
        self.systemd = SystemdNotifier.from_env(self.ready)

    def start(self) -> RunEndpoint:
        self.server.start()
        self.telemetry.start()
        if self.systemd is not None:
            self.systemd.start()
        print(f"edgeomni: metrics on {self.server.url}/metrics (liveness /health, readiness /ready)",
              file=sys.stderr, flush=True)
        return self

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "uptime_s": round(time.monotonic() - self.started, 1),
                "bundle": self.runtime.engines.tag, "streams": len(self.metrics.live_streams)}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        engines = {"ok": not self.runtime.closed, "bundle": self.runtime.engines.tag}
        source_ok, source = stream_check(self.runtime.streams, self.config.metrics.stall_s)
        ok = engines["ok"] and source_ok
        return ok, {"checks": {"engines": engines, "source": source}}

    def finish(self) -> None:
        """After the stream ended: with `[metrics] linger_s`, wait for one more scrape so the scraper has the
        final counts, then stop serving."""
        try:
            if self.config.metrics.linger_s > 0:
                self.server.wait_for_next_scrape(self.config.metrics.linger_s)
        finally:
            if self.systemd is not None:
                self.systemd.close()
            self.telemetry.close()
            self.server.close()


__all__ = ["RunEndpoint"]

"""Liveness, readiness, and the small HTTP server `edgeomni run --metrics HOST:PORT` answers them on.

- `/metrics`: the runtime's Prometheus registry (text format, or OpenMetrics when the scraper asks for it).
- `/health`: liveness, always 200 while the process serves: uptime, bundle, streams.
- `/ready`: 200 when the engines are loaded and every running stream's source has delivered a frame within
  `[metrics] stall_s`; 503 otherwise, with the reason. Computed at request time from the newest frame's delivery
  time, so it turns false `stall_s` after a source stops and true with its next frame.

One thread per request (`ThreadingHTTPServer`), daemon threads: a hung scraper never holds the process.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from edgeomni.errors import ConfigError
from edgeomni.observability.metrics import RuntimeMetrics
from edgeomni.pipeline import Pipeline

Probe = Callable[[], tuple[bool, dict[str, Any]]]


def stream_check(streams: list[Pipeline], stall_s: float, now: float | None = None) -> tuple[bool, dict[str, Any]]:
    """Whether every running stream's source is delivering: a frame within `stall_s`, none waiting for its first."""
    now = time.monotonic() if now is None else now
    running = [p for p in streams if not p.ended]
    if not running:
        return False, {"ok": False, "reason": "no stream running", "streams": 0}
    waiting = sum(1 for p in running if p.last_arrival is None)
    ages = [now - p.last_arrival for p in running if p.last_arrival is not None]
    oldest = max(ages, default=None)
    stalled = sum(1 for age in ages if age > stall_s)
    ok = not waiting and not stalled
    detail: dict[str, Any] = {"ok": ok, "streams": len(running), "stall_s": stall_s,
                              "last_frame_age_s": None if oldest is None else round(oldest, 3)}
    if waiting:
        detail["reason"] = f"{waiting} stream(s) waiting for their first frame"
    elif stalled:
        detail["reason"] = f"{stalled} stream(s) stalled: no frame for {oldest:.1f} s (limit {stall_s} s)"
    return ok, detail


class MetricsServer:
    """`/metrics`, `/health` and `/ready` on HOST:PORT, served from a background thread."""

    def __init__(self, host: str, port: int, metrics: RuntimeMetrics, health: Callable[[], dict[str, Any]],
                 ready: Probe) -> None:
        self.metrics, self.health, self.ready = metrics, health, ready
        self.scrapes_started = self.scrapes = 0
        self._scraped = threading.Condition()
        server_class = _IPv6Server if ":" in host else ThreadingHTTPServer
        try:
            self.httpd = server_class((host, port), _handler(self))
        except OSError as exc:
            raise ConfigError(f"--metrics {host}:{port}: cannot listen there ({exc.strerror or exc})") from None
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="edgeomni-metrics", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def wait_for_next_scrape(self, timeout: float) -> bool:
        """Block until a read of /metrics that starts after this call has been answered (or `timeout` passed):
        so the scraper has seen everything recorded before the call."""
        deadline = time.monotonic() + timeout
        with self._scraped:
            begun = self.scrapes_started  # only that many can finish before one that starts after now
            while self.scrapes <= begun:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._scraped.wait(left)
        return True

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)

    def _scrape(self, accept: str) -> tuple[bytes, str]:
        with self._scraped:
            self.scrapes_started += 1
        return self.metrics.exposition(accept)

    def _scraped_one(self) -> None:
        with self._scraped:
            self.scrapes += 1
            self._scraped.notify_all()


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _handler(server: MetricsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "edgeomni"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, content_type = server._scrape(self.headers.get("Accept", ""))
                self._reply(200, body, content_type)
                server._scraped_one()
            elif path == "/health":
                self._json(200, server.health())
            elif path == "/ready":
                ok, detail = server.ready()
                self._json(200 if ok else 503, {"ready": ok, **detail})
            else:
                self._json(404, {"error": f"no route {path!r}; try /metrics, /health or /ready"})

        def _json(self, status: int, payload: dict[str, Any]) -> None:
            self._reply(status, json.dumps(payload).encode(), "application/json")

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a scrape every few seconds is not worth a log line

    return Handler


__all__ = ["MetricsServer", "Probe", "stream_check"]

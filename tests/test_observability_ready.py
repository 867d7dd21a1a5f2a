"""`edgeomni run --metrics`: /ready follows the source (false within 2 s of a stall, true again with its next frame),
/health stays up, /metrics serves the runtime's registry; and `edgeomni serve`'s /metrics token rules and /ready."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from webrtc_support import ServerThread

from edgeomni.config import RunConfig
from edgeomni.frames import AudioFrame
from edgeomni.observability.endpoint import RunEndpoint
from edgeomni.observability.metrics import RuntimeMetrics
from edgeomni.runtime import Runtime
from edgeomni.sources.base import Emit, Source

STALL_S = 1.0  # [metrics] stall_s


class StallingSource(Source):
    """Live audio in 32 ms frames: `before` seconds of it, then nothing for `stall` seconds, then `after` more."""

    def __init__(self, before: float, stall: float, after: float) -> None:
        super().__init__("stalling", "stalling", live=True, paced=False)
        self.has_audio = True
        self.phases = (before, stall, after)
        self.stalled_at: float | None = None
        self.resumed_at: float | None = None

    def _run(self, emit: Emit, stop: threading.Event) -> None:
        samples, pts = np.zeros(512, np.float32), 0.0
        before, stall, after = self.phases
        for seconds, is_stall in ((before, False), (stall, True), (after, False)):
            if is_stall:
                self.stalled_at = time.monotonic()
                if stop.wait(seconds):
                    return
                self.resumed_at = time.monotonic()
                continue
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                if not emit(AudioFrame(samples, pts, 0.0)):
                    return
                pts += 0.032
                if stop.wait(0.032):
                    return


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_ready_turns_false_within_2_s_of_a_stall_and_back_when_frames_return(default_bundle: Path) -> None:
    config = RunConfig().override({"speech.enabled": False, "visual.enabled": False, "metrics.listen": "127.0.0.1:0",
                                   "metrics.stall_s": STALL_S, "telemetry.jetson": "off"})
    metrics = RuntimeMetrics()
    source = StallingSource(before=2.0, stall=4.0, after=2.0)
    with Runtime.open(default_bundle, config, metrics) as runtime:
        endpoint = RunEndpoint(runtime, metrics, config).start()
        url = endpoint.server.url
        status, body = _get(f"{url}/ready")
        assert status == 503 and "no stream running" in json.loads(body)["checks"]["source"]["reason"]

        async def stream() -> None:
            pipeline = runtime.stream(source, [])
            try:
                await pipeline.run()
            finally:
                await pipeline.sinks.close()

        worker = threading.Thread(target=asyncio.run, args=(stream(),), name="test-stream")
        worker.start()
        answers: list[tuple[float, int, dict[str, Any]]] = []
        deadline = time.monotonic() + 60
        try:
            while worker.is_alive():
                assert time.monotonic() < deadline, "the stream should have ended after about 8 s"
                status, body = _get(f"{url}/ready")
                answers.append((time.monotonic(), status, json.loads(body)))
                time.sleep(0.05)
            worker.join()
            status, body = _get(f"{url}/ready")
            after_end = json.loads(body)
            health_status, health = _get(f"{url}/health")
            scraped = _get(f"{url}/metrics")[1].decode()
            missing = _get(f"{url}/nope")[0]
        finally:
            endpoint.finish()
    assert source.stalled_at is not None and source.resumed_at is not None
    stall_answers = [(t, s, b) for t, s, b in answers if source.stalled_at <= t <= source.resumed_at]
    ages = [(s, b["checks"]["source"].get("last_frame_age_s")) for _, s, b in stall_answers]
    # Every answer given more than stall_s after the last frame says "not ready", with the reason ...
    assert all(status == 503 for status, age in ages if age is not None and age > STALL_S + 0.05), ages
    assert all("stalled" in b["checks"]["source"]["reason"] for _, s, b in stall_answers if s == 503)
    # ... and it turned so within 2 s of the stall.
    assert any(status == 503 and STALL_S < age <= 2.0 for status, age in ages if age is not None), ages
    assert any(s == 200 and t < source.stalled_at for t, s, _ in answers), "ready while frames arrived"
    assert any(s == 200 and t > source.resumed_at for t, s, _ in answers), "ready again once frames returned"
    assert status == 503 and after_end["checks"]["source"]["reason"] == "no stream running"
    assert health_status == 200 and json.loads(health)["bundle"].startswith("default@")
    assert "edgeomni_streams_total 1.0" in scraped and 'edgeomni_bundle_info{name="default"' in scraped
    assert missing == 404


@pytest.fixture(scope="module")
def server(default_bundle: Path):
    running = ServerThread(default_bundle, token=None).start()
    yield running
    running.stop()


def test_serve_metrics_are_open_on_loopback_and_need_a_token_elsewhere(server: ServerThread) -> None:
    status, body = _get(f"{server.url}/metrics")
    assert status == 200 and b"edgeomni_active_sessions 0.0" in body and b"process_resident_memory_bytes" in body
    serve = server.server.serve
    try:
        # The same server, as if bound to all interfaces with a token: /metrics then wants a bearer token.
        serve.host, serve.token, serve.metrics_token = "0.0.0.0", "signal-token-123", None
        assert _get(f"{server.url}/metrics")[0] == 401
        assert _get(f"{server.url}/metrics", "wrong-token-000")[0] == 401
        assert _get(f"{server.url}/metrics", "signal-token-123")[0] == 200
        serve.metrics_token = "scrape-token-456"
        assert _get(f"{server.url}/metrics", "signal-token-123")[0] == 401
        assert _get(f"{server.url}/metrics", "scrape-token-456")[0] == 200
        assert _get(f"{server.url}/health")[0] == 200  # liveness and readiness stay open, they name nobody
        status, body = _get(f"{server.url}/ready")
    finally:
        serve.host, serve.token, serve.metrics_token = "127.0.0.1", None, None
    ready = json.loads(body)
    assert status == 200 and ready["ready"] is True
    assert ready["checks"]["capacity"] == {"ok": True, "sessions": 0, "max_sessions": serve.max_sessions}

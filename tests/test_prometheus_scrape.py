"""Acceptance: a real Prometheus scrapes `edgeomni serve` (one WebRTC participant) and `edgeomni run --metrics` (a
file played in real time); its HTTP API then has the partial and final latency histograms, and
histogram_quantile(0.95) lands within one bucket of the p95 the stream's own `end` record reports.

"Within one bucket" is exact where the two latencies the `end` record's p95 interpolates between share a bucket
(usual). Where they lie buckets apart (a dozen partials, the top one slow), numpy's p95 sits between them while
Prometheus's estimate is in the upper one's bucket, legitimately more than one bucket off; so the check is that the
estimate is within one bucket of that pair, which is the same statement whenever the pair shares a bucket, and
never depends on how fast this machine happened to be.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from media_factory import make_speech_turns
from prometheus_server import PrometheusServer, free_port
from webrtc_support import SENTENCES, ServerThread, client_events, own_session, start_client

from edgeomni.observability.metrics import LATENCY_BUCKETS

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _bucket(seconds: float) -> int:
    """Index of the histogram bucket a value falls in (upper bounds inclusive, +Inf last)."""
    return bisect.bisect_left(LATENCY_BUCKETS, seconds)


def _check_against_end(prometheus: PrometheusServer, latency_ms: dict[str, dict[str, float]],
                       observed: dict[str, list[float]], series: str = "{name}") -> None:
    """Counts equal the `end` record's; the p95 estimate is within one bucket of the exact p95 (see above)."""
    for kind in ("partial", "final"):
        summary, values = latency_ms[kind], sorted(observed[kind])
        assert summary["n"] == len(values) > 0, f"{kind}: end record {summary}, {len(values)} events seen"
        name = f"edgeomni_{kind}_latency_seconds"
        prometheus.wait_for(series.format(name=f"{name}_count"), summary["n"])
        estimate = prometheus.value(f"histogram_quantile(0.95, {series.format(name=f'{name}_bucket')})")
        assert estimate is not None, f"no quantile for {name}"
        exact = summary["p95"] / 1000.0
        position = 0.95 * (len(values) - 1)  # numpy's linear percentile: between these two latencies
        low, high = values[math.floor(position)] / 1000.0, values[math.ceil(position)] / 1000.0
        assert low - 1e-4 <= exact <= high + 1e-4
        print(f"{kind}: n={summary['n']} histogram_quantile(0.95) = {estimate:.3f} s, end p95 = {exact:.3f} s "
              f"(between {low:.3f} and {high:.3f} s)")
        assert _bucket(low) - 1 <= _bucket(estimate) <= _bucket(high) + 1, (
            f"{kind}: histogram_quantile(0.95) = {estimate:.3f} s, the end record's p95 = {exact:.3f} s between "
            f"{low:.3f} and {high:.3f} s (buckets {LATENCY_BUCKETS})")
        if _bucket(low) == _bucket(high):
            assert abs(_bucket(estimate) - _bucket(exact)) <= 1


@pytest.fixture
def speech(tmp_path: Path) -> Path:
    return make_speech_turns(tmp_path / "turns.wav", SENTENCES[:3], pause_ms=900, speed=145)


def test_prometheus_scrapes_serve_with_one_participant(default_bundle: Path, speech: Path, tmp_path: Path) -> None:
    server = ServerThread(default_bundle, idle_timeout_s=3.0).start()  # loopback: /metrics needs no token
    observed: dict[str, list[float]] = {"partial": [], "final": []}
    metrics = server.server.metrics
    observe = metrics.observe

    def recording(pipeline: Any, event: Any) -> None:  # every latency the metrics see, server side
        if event.type in observed:
            observed[event.type].append(event.latency_ms)
        observe(pipeline, event)

    metrics.observe = recording  # type: ignore[method-assign]
    prometheus = PrometheusServer(tmp_path, {"serve": server.url.removeprefix("http://")})
    try:
        prometheus.wait_for('up{job="serve"}', 1)
        events = client_events(start_client(server.url, speech, "alice"), timeout=180)
        session = own_session(events, "alice")
        end = next(e for e in events if e["type"] == "end" and e.get("session") == session)
        _check_against_end(prometheus, end["latency_ms"], observed)
        assert prometheus.value("edgeomni_streams_total") == 1
        assert prometheus.value("edgeomni_finals_total") == end["finals"]
        assert prometheus.value('edgeomni_inference_seconds_count{role="vad",provider="cpu"}') > 0
        prometheus.wait_for("edgeomni_active_sessions", 0)
    finally:
        prometheus.stop()
        server.stop()


def test_prometheus_scrapes_run_metrics_on_a_real_time_file(default_bundle: Path, speech: Path,
                                                           tmp_path: Path) -> None:
    port = free_port()
    prometheus = PrometheusServer(tmp_path, {"device": f"127.0.0.1:{port}"})
    try:
        # --metrics-linger: the file ends, and the process waits for one more scrape so Prometheus has the totals.
        run = subprocess.run(
            [sys.executable, "-m", "edgeomni", "run", "--source", str(speech), "--bundle", str(default_bundle),
             "--sink", "jsonl:-", "--no-visual", "--metrics", f"127.0.0.1:{port}", "--metrics-linger", "60"],
            capture_output=True, text=True, timeout=240, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert run.returncode == 0, run.stderr[-2000:]
        records: list[dict[str, Any]] = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
        end = records[-1]
        assert end["type"] == "end" and end["finals"] >= 2, end
        observed = {kind: [r["latency_ms"] for r in records if r["type"] == kind] for kind in ("partial", "final")}
        # The target is gone now: its series are stale, so read each one's last scraped value.
        _check_against_end(prometheus, end["latency_ms"], observed, series="last_over_time({name}[10m])")
        assert prometheus.value("last_over_time(edgeomni_finals_total[10m])") == end["finals"]
        assert prometheus.value('last_over_time(edgeomni_bundle_info{name="default"}[10m])') == 1
        assert prometheus.value('last_over_time(process_resident_memory_bytes{job="device"}[10m])') > 10e6
        encoder = prometheus.value('sum(last_over_time(edgeomni_inference_seconds_count{role=~"asr.*"}[10m]))')
        assert encoder is not None and encoder > 0
    finally:
        prometheus.stop()

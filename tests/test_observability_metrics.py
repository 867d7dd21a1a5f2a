"""The runtime's Prometheus metrics without models: events into histograms and counters, live head counters that
never step back when a stream ends, inference timing per role and provider, naming conventions, config, and the
README's list of metrics."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edgeomni.errors import ConfigError
from edgeomni.events import EndEvent, ErrorEvent, FinalEvent, OtaEvent, PartialEvent, VisualEvent
from edgeomni.observability.config import MetricsConfig, TelemetryConfig, parse_listen
from edgeomni.observability.metrics import LATENCY_BUCKETS, RuntimeMetrics, TimedSession, provider_label
from edgeomni.observability.outbox import OutboxCollector
from edgeomni.observability.tegrastats import JetsonTelemetry
from edgeomni.outbox.store import Outbox
from edgeomni.sync.worker import SyncStats


@dataclass
class _Sinks:
    dropped: dict[str, int] = field(default_factory=lambda: {"jsonl:-": 0})
    failing: dict[str, dict[str, Any]] = field(default_factory=dict)

    def failure_report(self) -> dict[str, dict[str, Any]]:
        return self.failing


@dataclass
class _Stream:
    """What the metrics read from a pipeline: its heads' counters and its sinks."""

    head: dict[str, Any] = field(default_factory=lambda: {"merged_updates": 0, "interval_widened": 0,
                                                         "audio_seconds": 0.0, "vision_error": None})
    sinks: _Sinks = field(default_factory=_Sinks)

    def counters(self) -> dict[str, Any]:
        return dict(self.head)


def _scrape(metrics: RuntimeMetrics) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def _caption(kind: type, latency_ms: float, text: str = "one two three") -> Any:
    return kind(stream="main", text=text, start=0.0, end=1.0, emitted=1.2, latency_ms=latency_ms)


def _end() -> EndEvent:
    return EndEvent(stream="main", source="s", media_seconds=1.0, wall_seconds=1.0, finals=1, partials=2, visuals=0,
                    latency_ms={}, rtf=None, cpu_seconds=0.1, counters={}, sink_drops={}, error=None)


def test_events_feed_the_histograms_and_counters() -> None:
    metrics, stream = RuntimeMetrics(process=False), _Stream()
    metrics.stream_opened(stream)  # type: ignore[arg-type]
    for event in (_caption(PartialEvent, 80.0), _caption(PartialEvent, 130.0), _caption(FinalEvent, 420.0),
                  _caption(VisualEvent, 60.0), ErrorEvent(stream="main", message="decoder died"),
                  ErrorEvent(stream="main", code="no-audio", message="no audio")):
        metrics.observe(stream, event)  # type: ignore[arg-type]
    metrics.ota_step(OtaEvent(status="refused", bundle="default@9", reason="bad signature"))
    metrics.ota_step(OtaEvent(status="switched", stream="main", head="speech", bundle="default@9"))
    scraped = _scrape(metrics)
    assert scraped["edgeomni_partials_total"][()] == 2 and scraped["edgeomni_finals_total"][()] == 1
    assert scraped["edgeomni_final_words_total"][()] == 3 and scraped["edgeomni_visual_events_total"][()] == 1
    assert scraped["edgeomni_partial_latency_seconds_count"][()] == 2
    assert scraped["edgeomni_partial_latency_seconds_sum"][()] == pytest.approx(0.21)
    assert scraped["edgeomni_partial_latency_seconds_bucket"][(("le", "0.1"),)] == 1
    assert scraped["edgeomni_final_latency_seconds_bucket"][(("le", "0.4"),)] == 0
    assert scraped["edgeomni_final_latency_seconds_bucket"][(("le", "0.5"),)] == 1
    assert scraped["edgeomni_errors_total"][(("kind", "source"),)] == 1
    assert scraped["edgeomni_errors_total"][(("kind", "no-audio"),)] == 1
    assert scraped["edgeomni_ota_updates_total"] == {(("status", "refused"),): 1}
    assert scraped["edgeomni_streams_total"][()] == 1 and scraped["edgeomni_active_streams"][()] == 1


def test_head_counters_are_live_and_never_step_back_when_a_stream_ends() -> None:
    metrics, first, second = RuntimeMetrics(process=False), _Stream(), _Stream()
    metrics.stream_opened(first)  # type: ignore[arg-type]
    metrics.stream_opened(second)  # type: ignore[arg-type]
    first.head.update(merged_updates=3, interval_widened=1, audio_seconds=2.5)
    second.head.update(merged_updates=2)
    second.sinks.dropped["jsonl:-"] = 4
    second.sinks.failing["vtt:x"] = {"failures": 3, "lost": 2, "gave_up": False, "last_error": "OSError: disk full"}
    live = _scrape(metrics)
    assert live["edgeomni_updates_coalesced_total"][()] == 5
    assert live["edgeomni_degradations_total"][(("kind", "partial_interval_widened"),)] == 1
    assert live["edgeomni_audio_seconds_total"][()] == 2.5
    assert live["edgeomni_sink_dropped_updates_total"][()] == 4
    assert live["edgeomni_errors_total"][(("kind", "sink"),)] == 3
    assert live["edgeomni_sink_lost_events_total"][()] == 2
    first.head["merged_updates"] = 4
    metrics.observe(first, _end())  # type: ignore[arg-type]  # folded into the finished totals
    first.head["merged_updates"] = 99  # a finished stream is no longer read
    metrics.stream_closed(second)  # type: ignore[arg-type]  # cancelled without its end event
    metrics.stream_closed(second)  # type: ignore[arg-type]  # twice: counted once
    after = _scrape(metrics)
    assert after["edgeomni_updates_coalesced_total"][()] == 6
    assert after["edgeomni_active_streams"][()] == 0
    assert after["edgeomni_sink_dropped_updates_total"][()] == 4


def test_an_error_kind_from_events_and_heads_is_one_series() -> None:
    metrics, stream = RuntimeMetrics(process=False), _Stream()
    metrics.stream_opened(stream)  # type: ignore[arg-type]
    stream.sinks.failing["vtt:x"] = {"failures": 1, "lost": 0, "gave_up": False, "last_error": "OSError"}
    metrics.observe(stream, ErrorEvent(stream="main", code="sink", message="a sink failed"))  # type: ignore[arg-type]
    exposition = generate_latest(metrics.registry).decode()
    assert exposition.count('edgeomni_errors_total{kind="sink"}') == 1
    assert _scrape(metrics)["edgeomni_errors_total"][(("kind", "sink"),)] == 2


class _Session:
    def __init__(self, providers: list[str]) -> None:
        self.providers, self.calls = providers, 0

    def run(self, outputs: Any, feeds: dict[str, Any]) -> list[int]:
        self.calls += 1
        return [len(feeds)]

    def get_providers(self) -> list[str]:
        return self.providers

    def get_inputs(self) -> list[str]:
        return ["x"]


class _Engine:  # a TensorRT engine: no get_providers
    def run(self, outputs: Any, feeds: dict[str, Any]) -> list[int]:
        return [0]


def test_timed_sessions_label_role_and_provider_and_pass_everything_through() -> None:
    metrics = RuntimeMetrics(process=False)
    cpu = TimedSession(_Session(["CPUExecutionProvider"]), metrics.inference, "vad")
    probe = TimedSession(_Session(["CUDAExecutionProvider", "CPUExecutionProvider"]), metrics.inference, "asr")
    engine = TimedSession(_Engine(), metrics.inference, "image-labeller")
    assert cpu.run(None, {"a": 1, "b": 2}) == [2] and cpu.get_inputs() == ["x"]
    cpu.run(None, {})
    engine.run(None, {})
    assert probe.get_providers()[0] == "CUDAExecutionProvider"  # opened, never run: no series
    counts = _scrape(metrics)["edgeomni_inference_seconds_count"]
    assert counts == {(("provider", "cpu"), ("role", "vad")): 2, (("provider", "tensorrt"),
                                                                  ("role", "image-labeller")): 1}
    assert provider_label(_Session(["TensorrtExecutionProvider"])) == "tensorrt-ep"


def test_names_follow_prometheus_conventions() -> None:
    metrics = RuntimeMetrics()
    metrics.track_sessions(lambda: 0)
    metrics.observe(_Stream(), ErrorEvent(stream="main", message="x"))  # type: ignore[arg-type]
    families = list(text_string_to_metric_families(generate_latest(metrics.registry).decode()))
    names = {f.name: f for f in families}
    assert "process_resident_memory_bytes" in {s.name for f in families for s in f.samples}
    assert "process_cpu_seconds_total" in {s.name for f in families for s in f.samples}
    for family in families:
        assert family.name.startswith(("edgeomni_", "process_", "python_")), family.name
        assert re.fullmatch(r"[a-z_]+[a-z0-9_]*", family.name)
        for sample in family.samples:
            assert not {"stream", "session", "participant", "user", "device"} & set(sample.labels), sample
            if family.type == "counter":
                assert sample.name.endswith("_total"), sample.name
    assert names["edgeomni_final_latency_seconds"].type == "histogram"
    assert "edgeomni_build_info" in names and "edgeomni_active_sessions" in names


def test_latency_buckets_are_fine_between_50_ms_and_1_s() -> None:
    inside = [b for b in LATENCY_BUCKETS if 0.05 <= b <= 1.0]
    assert len(inside) >= 12 and max(b - a for a, b in itertools.pairwise(inside)) <= 0.2


@pytest.mark.parametrize("text, expected", [("127.0.0.1:9108", ("127.0.0.1", 9108)), ("9108", ("127.0.0.1", 9108)),
                                            (":0", ("127.0.0.1", 0)), ("0.0.0.0:80", ("0.0.0.0", 80)),
                                            ("[::1]:9108", ("::1", 9108))])
def test_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("config, message", [
    (lambda: MetricsConfig(listen="host:port").validate(), "metrics.listen: expected HOST:PORT"),
    (lambda: MetricsConfig(listen="1.2.3.4:70000").validate(), "metrics.listen"),
    (lambda: MetricsConfig(stall_s=0).validate(), "metrics.stall_s"),
    (lambda: TelemetryConfig(jetson="maybe").validate(), "telemetry.jetson: expected one of auto, off"),
    (lambda: TelemetryConfig(interval_ms=5).validate(), "telemetry.interval_ms"),
])
def test_bad_settings_are_named(config: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        config()


class _Worker:
    def __init__(self) -> None:
        self.stats, self.connected = SyncStats(acked_records=3), True


def test_the_readme_lists_every_metric_the_runtime_exposes(tmp_path: Path) -> None:
    """README.md's metrics table is the Grafana reference: every family there exists, and every edgeomni_ family
    exists there (with an outbox, sync, Jetson telemetry and serve's session gauge all present)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme.split("<!-- metrics-table")[1].split("<!-- /metrics-table -->")[0]
    listed = set(re.findall(r"^\| `([a-z0-9_]+)`", table, re.MULTILINE))
    metrics = RuntimeMetrics()
    metrics.track_sessions(lambda: 1)
    metrics.registry.register(OutboxCollector(Outbox(tmp_path / "outbox.sqlite"), _Worker()))  # type: ignore[arg-type]
    telemetry = JetsonTelemetry(TelemetryConfig())
    telemetry.handle("RAM 2448/62840MB GR3D_FREQ 5%@[305,305] EMC_FREQ 1%@2133 tj@42C VDD_GPU_SOC 4940mW/4940mW")
    telemetry.mode, telemetry.clocks = ("MAXN", "0"), True
    metrics.registry.register(telemetry)
    metrics.observe(_Stream(), ErrorEvent(stream="main", message="x"))  # type: ignore[arg-type]
    exposed = set()
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        exposed.add(f"{family.name}_total" if family.type == "counter" else family.name)
    exposed.add("edgeomni_bundle_info")  # set when a runtime opens its bundle
    ours = {name for name in exposed if name.startswith("edgeomni_")}
    assert {name for name in listed if name.startswith("edgeomni_")} == ours
    assert listed - ours <= exposed

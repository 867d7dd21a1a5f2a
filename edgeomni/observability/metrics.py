"""Prometheus metrics of one runtime: caption latency, counts, degradations, errors, inference time, bundle.

`RuntimeMetrics` owns its own `CollectorRegistry` (never the process-wide default one), so two runtimes in one
process, or a test next to a server, never share a series. The `Runtime` feeds it from three places:

- every event a stream publishes (`observe`, inline in the pipeline: a histogram observation, no queue);
- the streams themselves, read at scrape time (`StreamCollector`): the heads' counters (merged updates,
  degradations, stalls, ...) and the sinks' drops of every running stream, plus the totals of the finished ones,
  so a device that runs for weeks shows them live, not only in its `end` record;
- every model session the runtime opens (`session_timer`): inference seconds per model role and provider.

Names follow Prometheus conventions: `edgeomni_` prefix, base units (`_seconds`, `_bytes`), counters end in
`_total`; no label names a stream, a session or a participant.
"""

from __future__ import annotations

import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edgeomni import __version__
from edgeomni.bundle import VerifiedBundle
from edgeomni.events import EndEvent, ErrorEvent, Event, FinalEvent, OtaEvent, PartialEvent, VisualEvent
from edgeomni.pipeline import Pipeline

# Caption latency: fine steps where the budget (200 ms) and the usual figures (50 ms .. 1 s) are, so that
# histogram_quantile() lands within one bucket of the exact percentile the `end` record reports.
LATENCY_BUCKETS = (0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.175, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0,
                   1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
# One model call: from the VAD's 0.15 ms to a Whisper encoder window of seconds on a small CPU.
INFERENCE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

PROVIDER_LABELS = {"TensorrtExecutionProvider": "tensorrt-ep", "CUDAExecutionProvider": "cuda",
                   "CPUExecutionProvider": "cpu"}

# Head counters (captions/*.py `counters()`) exposed as Prometheus counters: key -> (metric, labels, help).
# Keys a head does not report are simply absent; new head counters are not exported until listed here.
HEAD_COUNTERS: dict[str, tuple[str, dict[str, str]]] = {
    "merged_updates": ("edgeomni_updates_coalesced", {}),
    "interval_widened": ("edgeomni_degradations", {"kind": "partial_interval_widened"}),
    "sampling_downshifts": ("edgeomni_degradations", {"kind": "video_sampling_downshift"}),
    "skipped_blocks": ("edgeomni_degradations", {"kind": "video_block_skipped"}),
    "visual_over_budget": ("edgeomni_degradations", {"kind": "visual_over_budget"}),
    "stalls": ("edgeomni_source_stalls", {}),
    "speculative_finals": ("edgeomni_speculative_finals", {"outcome": "used"}),
    "speculations_discarded": ("edgeomni_speculative_finals", {"outcome": "discarded"}),
    "no_speech_rejected": ("edgeomni_transcripts_rejected", {"reason": "no_speech"}),
    "empty_transcripts": ("edgeomni_transcripts_rejected", {"reason": "empty"}),
    "utterance_splits": ("edgeomni_utterance_splits", {}),
    "audio_seconds": ("edgeomni_audio_seconds", {}),
    "asr_seconds": ("edgeomni_head_compute_seconds", {"head": "speech"}),
    "vision_seconds": ("edgeomni_head_compute_seconds", {"head": "visual"}),
    "video_blocks": ("edgeomni_video_blocks", {}),
    "frames_seen": ("edgeomni_video_frames", {}),
    "failed_blocks": ("edgeomni_errors", {"kind": "video_block"}),
    "sink_drops": ("edgeomni_sink_dropped_updates", {}),
    "sink_failures": ("edgeomni_errors", {"kind": "sink"}),
    "sink_lost": ("edgeomni_sink_lost_events", {}),
}
HELP = {
    "edgeomni_updates_coalesced": "Partial caption updates merged into a newer one while the decoder was busy",
    "edgeomni_degradations": "Steps the runtime took to keep up when behind, by kind",
    "edgeomni_source_stalls": "Utterances finalised because a live source stopped mid-utterance",
    "edgeomni_speculative_finals": "Finals decoded before the endpoint, by whether the guess was used",
    "edgeomni_transcripts_rejected": "Decoded utterances dropped as not speech, by reason",
    "edgeomni_utterance_splits": "Utterances split at a quiet point because they ran too long",
    "edgeomni_audio_seconds": "Seconds of audio captioned",
    "edgeomni_head_compute_seconds": "Wall seconds the caption heads spent in their models, by head",
    "edgeomni_video_blocks": "Video blocks formed from sampled frames",
    "edgeomni_video_frames": "Video frames seen by the visual head",
    "edgeomni_errors": "Errors by kind: source (a stream failed), video_block, sink (a failed send), offer, and "
                       "error event codes",
    "edgeomni_sink_dropped_updates": "Partial captions a slow sink did not get (superseded ones only)",
    "edgeomni_sink_lost_events": "Events a failing sink never got (given up on, or its queue full while failing)",
}


def stream_counters(pipeline: Pipeline) -> dict[str, float]:
    """The numeric counters of one stream right now: its heads' counters, its sinks' drops, failed sends and lost
    events."""
    counters: dict[str, float] = {}
    for key, value in pipeline.counters().items():
        if key in HEAD_COUNTERS and isinstance(value, int | float) and not isinstance(value, bool):
            counters[key] = float(value)
    counters["sink_drops"] = float(sum(pipeline.sinks.dropped.values()))
    failing = pipeline.sinks.failure_report().values()
    counters["sink_failures"] = float(sum(report["failures"] for report in failing))
    counters["sink_lost"] = float(sum(report["lost"] for report in failing))
    return counters


class StreamCollector(Collector):
    """Scrape-time view of the streams: running ones read live, finished ones folded into totals (under one lock,
    so a stream that ends between two scrapes is counted once and its counters never step back)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: list[Pipeline] = []
        self._finished: Tally[str] = Tally()
        self.errors: Tally[str] = Tally()  # from error events (source failures, refused messages)

    def opened(self, pipeline: Pipeline) -> None:
        with self._lock:
            self._live.append(pipeline)

    def closed(self, pipeline: Pipeline) -> None:
        with self._lock:
            for index, live in enumerate(self._live):
                if live is pipeline:
                    del self._live[index]
                    self._finished.update(stream_counters(pipeline))
                    return

    def error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] += 1

    @property
    def live(self) -> list[Pipeline]:
        with self._lock:
            return list(self._live)

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            totals = Tally(self._finished)
            for pipeline in self._live:
                totals.update(_read_live(pipeline))
            live, errors = len(self._live), Tally(self.errors)
        yield GaugeMetricFamily("edgeomni_active_streams", "Streams being captioned now", value=live)
        values: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        for key, (name, labels) in HEAD_COUNTERS.items():
            series = values.setdefault(name, {})
            if labels or key in totals:
                label_set = tuple(sorted(labels.items()))
                series[label_set] = series.get(label_set, 0.0) + totals.get(key, 0.0)
        for kind, count in errors.items():  # error events add to the same series as the heads' errors of a kind
            series = values["edgeomni_errors"]
            series[(("kind", kind),)] = series.get((("kind", kind),), 0.0) + count
        for name, series in values.items():
            family = CounterMetricFamily(name, HELP[name], labels=[k for k, _ in next(iter(series), ())])
            for label_set, value in sorted(series.items()):
                family.add_metric([v for _, v in label_set], value)
            yield family


def _read_live(pipeline: Pipeline) -> dict[str, float]:
    # Head counters are plain ints/floats updated on the event loop; reading them from a scrape thread is safe,
    # but a dict being built at that instant can change size under us: read again.
    for _ in range(3):
        try:
            return stream_counters(pipeline)
        except RuntimeError:
            continue
    return {}


class TimedSession:
    """A model session whose `run` is timed into `edgeomni_inference_seconds{role,provider}`; everything else
    (`get_inputs`, `get_providers`, ...) is the session's own. Cost per call: two perf_counter reads and one
    histogram observation (about a microsecond)."""

    __slots__ = ("_child", "_histogram", "_labels", "_session")

    def __init__(self, session: Any, histogram: Histogram, role: str) -> None:
        self._session, self._histogram = session, histogram
        self._labels = (role, provider_label(session))
        self._child: Callable[[float], None] | None = None  # resolved at the first call: no series for a session
        # that a backend probe opened and dropped

    def run(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return self._session.run(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - start
            if self._child is None:
                self._child = self._histogram.labels(*self._labels).observe
            self._child(elapsed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def provider_label(session: Any) -> str:
    """What runs a session: `cpu`, `cuda`, `tensorrt-ep` (ONNX Runtime's providers) or `tensorrt` (an engine)."""
    get_providers = getattr(session, "get_providers", None)
    if get_providers is None:
        return "tensorrt"
    providers = get_providers()
    return PROVIDER_LABELS.get(providers[0], providers[0]) if providers else "unknown"


def model_roles(bundle: VerifiedBundle) -> dict[Path, str]:
    """Model file -> the role it serves (a TensorRT form of a role is that role: the provider label tells)."""
    roles: dict[Path, str] = {}
    for role, component in bundle.manifest.components.items():
        base = role.removesuffix("-tensorrt-onnx").removesuffix("-tensorrt")
        roles[(bundle.path / component.file).resolve()] = base
    return roles


class RuntimeMetrics:
    """The metrics of one runtime (`edgeomni run`, `edgeomni serve`), on a registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None, process: bool = True) -> None:
        prometheus_client.disable_created_metrics()  # `_created` series double the exposition for nothing we use
        self.registry = registry = registry or CollectorRegistry()
        self.partial_latency = Histogram(
            "edgeomni_partial_latency_seconds", "Partial caption latency: delivery of the last audio it reflects "
            "-> emission", buckets=LATENCY_BUCKETS, registry=registry)
        self.final_latency = Histogram(
            "edgeomni_final_latency_seconds", "Final caption latency: end of speech (plus pad) -> emission",
            buckets=LATENCY_BUCKETS, registry=registry)
        self.visual_latency = Histogram(
            "edgeomni_visual_latency_seconds", "Screen note latency: delivery of the block's last frame -> emission",
            buckets=LATENCY_BUCKETS, registry=registry)
        self.partials = Counter("edgeomni_partials", "Partial captions emitted", registry=registry)
        self.finals = Counter("edgeomni_finals", "Final captions emitted", registry=registry)
        self.words = Counter("edgeomni_final_words", "Words in final captions", registry=registry)
        self.visuals = Counter("edgeomni_visual_events", "Screen notes (labels, faces, on-screen text) emitted",
                               registry=registry)
        self.streams = Counter("edgeomni_streams", "Streams started", registry=registry)
        self.ota = Counter("edgeomni_ota_updates", "Signed bundle update steps by status (downloading, verified, "
                           "installed, refused)", ["status"], registry=registry)
        self.inference = Histogram("edgeomni_inference_seconds", "One model call, by model role and provider",
                                   ["role", "provider"], buckets=INFERENCE_BUCKETS, registry=registry)
        self.bundle = Info("edgeomni_bundle", "The bundle new streams start on", registry=registry)
        Info("edgeomni_build", "EdgeOmni version", registry=registry).info({"version": __version__})
        self.stream_collector = StreamCollector()
        registry.register(self.stream_collector)
        if process:
            ProcessCollector(registry=registry)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
            PlatformCollector(registry=registry)  # python_info

    # -- what the runtime calls ------------------------------------------------------------------------------
    def session_timer(self, bundle: VerifiedBundle) -> Callable[[Path, Any], Any]:
        """The hook `engines.session.session_hook` takes while `bundle`'s engines load."""
        roles = model_roles(bundle)

        def wrap(path: Path, session: Any) -> TimedSession:
            resolved = path.resolve()
            return TimedSession(session, self.inference, roles.get(resolved, resolved.stem))

        return wrap

    def track_sessions(self, count: Callable[[], float]) -> None:
        """`edgeomni serve`: the number of connected WebRTC sessions, read at scrape time."""
        Gauge("edgeomni_active_sessions", "WebRTC sessions connected (edgeomni serve)",
              registry=self.registry).set_function(count)

    def set_bundle(self, bundle: VerifiedBundle) -> None:
        self.bundle.info({"name": bundle.manifest.name, "version": str(bundle.manifest.version)})

    def stream_opened(self, pipeline: Pipeline) -> None:
        self.streams.inc()
        self.stream_collector.opened(pipeline)

    def observe(self, pipeline: Pipeline, event: Event) -> None:
        """Every event a stream publishes, inline: it must stay cheap (no I/O, no awaits)."""
        if isinstance(event, PartialEvent):
            self.partials.inc()
            self.partial_latency.observe(event.latency_ms / 1000.0)
        elif isinstance(event, FinalEvent):
            self.finals.inc()
            self.words.inc(len(event.text.split()))
            self.final_latency.observe(event.latency_ms / 1000.0)
        elif isinstance(event, VisualEvent):
            self.visuals.inc()
            self.visual_latency.observe(event.latency_ms / 1000.0)
        elif isinstance(event, ErrorEvent):
            self.stream_collector.error(event.code or "source")
        elif isinstance(event, EndEvent):
            self.stream_collector.closed(pipeline)

    def stream_closed(self, pipeline: Pipeline) -> None:
        """A stream that ended without its `end` event (cancelled): its counters are kept all the same."""
        self.stream_collector.closed(pipeline)

    def ota_step(self, event: OtaEvent) -> None:
        if event.status != "switched":  # switched is per stream and head, not an update
            self.ota.labels(event.status).inc()

    def error(self, kind: str) -> None:
        self.stream_collector.error(kind)

    @property
    def live_streams(self) -> list[Pipeline]:
        return self.stream_collector.live

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The registry in the format the scraper asked for (`Accept`), and its content type."""
        encoder, content_type = prometheus_client.exposition.choose_encoder(accept)
        return encoder(self.registry), content_type


def metric_names(metrics: RuntimeMetrics) -> Iterator[str]:
    """Every metric family the registry exposes (the README's list is checked against it)."""
    for family in metrics.registry.collect():
        yield family.name


__all__ = ["HEAD_COUNTERS", "INFERENCE_BUCKETS", "LATENCY_BUCKETS", "RuntimeMetrics", "StreamCollector",
           "TimedSession", "metric_names", "model_roles", "provider_label", "stream_counters"]

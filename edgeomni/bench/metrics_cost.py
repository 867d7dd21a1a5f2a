"""What metrics cost the captions: `python -m edgeomni.bench.metrics_cost [--rounds N] [--source SRC] [--out DIR]`.

Plays the source (the sample clip by default) real-time paced through a runtime, alternately without metrics and
with everything `edgeomni run --metrics` adds: the registry with every model call timed and every event observed,
the HTTP endpoint, and a scraper reading /metrics every second (Prometheus' 1 s interval, 15x the default). Runs
alternate (off, on, off, on, ...) so a change in background load hits both; caption latency, CPU seconds and the
engines' compute are compared per mode. Also times the two per-call costs in isolation: a timed model call
against a bare one, and observing one caption event.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import threading
import time
import urllib.request
from pathlib import Path
from statistics import median
from typing import Any

from edgeomni.bench.report import machine
from edgeomni.config import RunConfig
from edgeomni.events import CaptionEvent, EndEvent, Event, PartialEvent
from edgeomni.observability.endpoint import RunEndpoint
from edgeomni.observability.metrics import RuntimeMetrics, TimedSession
from edgeomni.paths import default_bundle_dir
from edgeomni.runtime import Runtime
from edgeomni.sinks.base import Sink
from edgeomni.sources import open_source
from edgeomni.telemetry import percentiles

KINDS = ("partial", "final", "visual")


class _Collect(Sink):
    name = "collect"

    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = {kind: [] for kind in KINDS}
        self.end: EndEvent | None = None

    async def send(self, event: Event) -> None:
        if isinstance(event, CaptionEvent):
            self.latencies[event.type].append(event.latency_ms)
        elif isinstance(event, EndEvent):
            self.end = event


def _scrape_every_second(url: str, stop: threading.Event, scrapes: list[float]) -> None:
    while not stop.wait(1.0):
        started = time.perf_counter()
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as reply:
            reply.read()
        scrapes.append((time.perf_counter() - started) * 1000)


def one_run(bundle: Path, source: str, with_metrics: bool) -> dict[str, Any]:
    config = RunConfig().override({"metrics.listen": "127.0.0.1:0" if with_metrics else None,
                                   "telemetry.jetson": "off"})
    metrics = RuntimeMetrics() if with_metrics else None
    sink, scrapes, stop = _Collect(), [], threading.Event()
    width = config.visual.frame_width
    with Runtime.open(bundle, config, metrics) as runtime:
        endpoint = RunEndpoint(runtime, metrics, config) if metrics is not None else None
        scraper = None
        if endpoint is not None:
            endpoint.server.start()  # the endpoint without its "metrics on ..." line
            scraper = threading.Thread(target=_scrape_every_second, args=(endpoint.server.url, stop, scrapes))
            scraper.start()

        async def play() -> None:
            pipeline = runtime.stream(open_source(source, realtime=True, video_size=(width, -1)), [sink])
            try:
                await pipeline.run()
            finally:
                await pipeline.sinks.close()

        try:
            asyncio.run(play())
        finally:
            stop.set()
            if scraper is not None:
                scraper.join()
            if endpoint is not None:
                endpoint.server.close()
    end = sink.end
    assert end is not None
    return {"metrics": with_metrics, "latencies": sink.latencies, "cpu_seconds": end.cpu_seconds, "rtf": end.rtf,
            "finals": end.finals, "partials": end.partials, "scrape_ms": scrapes,
            "model_calls": _model_calls(metrics) if metrics is not None else None}


def _model_calls(metrics: RuntimeMetrics) -> int:
    """How many model calls were timed in the run (the calls the wrapper cost something on)."""
    return int(sum(sample.value for family in metrics.inference.collect() for sample in family.samples
                   if sample.name == "edgeomni_inference_seconds_count"))


class _Bare:
    def run(self, outputs: Any, feeds: Any) -> Any:
        return feeds


def per_call_costs(calls: int = 200_000) -> dict[str, float]:
    """Microseconds added per model call by the timing wrapper, and per caption event by `observe`."""
    metrics, bare = RuntimeMetrics(process=False), _Bare()
    timed = TimedSession(bare, metrics.inference, "bench")
    costs: dict[str, list[float]] = {"session_run_us": [], "timed_session_run_us": [], "observe_event_us": []}
    event = PartialEvent(stream="s", text="a b c", start=0.0, end=1.0, emitted=1.1, latency_ms=120.0)
    for _ in range(5):
        for key, call in (("session_run_us", lambda: bare.run(None, None)),
                          ("timed_session_run_us", lambda: timed.run(None, None)),
                          ("observe_event_us", lambda: metrics.observe(None, event))):  # type: ignore[arg-type]
            started = time.perf_counter()
            for _ in range(calls):
                call()
            costs[key].append((time.perf_counter() - started) / calls * 1e6)
    result = {key: round(median(values), 3) for key, values in costs.items()}
    result["timing_overhead_us"] = round(result["timed_session_run_us"] - result["session_run_us"], 3)
    return result


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, on in (("off", False), ("on", True)):
        mine = [r for r in runs if r["metrics"] is on]
        out[label] = {
            **{f"{kind}_ms": percentiles([v for r in mine for v in r["latencies"][kind]]) for kind in KINDS},
            "cpu_seconds": [r["cpu_seconds"] for r in mine], "rtf": [r["rtf"] for r in mine],
            "partials": [r["partials"] for r in mine], "finals": [r["finals"] for r in mine],
        }
        if on:
            out[label]["scrape_ms"] = percentiles([v for r in mine for v in r["scrape_ms"]])
            out[label]["model_calls"] = [r["model_calls"] for r in mine]
    return out


def markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    lines = [f"Source `{report['source']}`, {report['rounds']} rounds alternating off/on, {report['date']}, "
             f"{report['machine']['nproc']} cores {report['machine']['cpu_model']}.", "",
             "| metrics | partial p50 / p95 | final p50 / p95 | screen note p50 / p95 | CPU s per run | RTF |",
             "|---|---|---|---|---|---|"]
    for label in ("off", "on"):
        row = s[label]
        cells = [f"{row[f'{k}_ms'].get('p50', '-')} / {row[f'{k}_ms'].get('p95', '-')} ms" for k in KINDS]
        lines.append(f"| {label} | {' | '.join(cells)} | {', '.join(str(c) for c in row['cpu_seconds'])} | "
                     f"{', '.join(str(r) for r in row['rtf'])} |")
    costs, calls = report["per_call"], s["on"]["model_calls"]
    lines += ["", f"Per call: a bare session.run {costs['session_run_us']} us, timed {costs['timed_session_run_us']} "
              f"us (+{costs['timing_overhead_us']} us); observing one caption event {costs['observe_event_us']} us. "
              f"Model calls timed per run: {', '.join(str(c) for c in calls)} (x {costs['timing_overhead_us']} us = "
              f"{max(calls) * costs['timing_overhead_us'] / 1000:.0f} ms of CPU at most per run). "
              f"Scrapes while on: {s['on']['scrape_ms']['n']}, each p50 / p95 {s['on']['scrape_ms'].get('p50')} / "
              f"{s['on']['scrape_ms'].get('p95')} ms."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeomni.bench.metrics_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=default_bundle_dir())
    parser.add_argument("--source", default="sample", help="what to play real-time paced (default: the sample clip)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per mode, alternating (default: 3)")
    parser.add_argument("--out", type=Path, default=Path("bench-out"), help="metrics_cost.json and .md go here")
    args = parser.parse_args(argv)
    runs = []
    for round_ in range(args.rounds):
        for with_metrics in (False, True):
            print(f"round {round_ + 1}/{args.rounds}: metrics {'on' if with_metrics else 'off'}", flush=True)
            runs.append(one_run(args.bundle, args.source, with_metrics))
    report = {"source": args.source, "rounds": args.rounds, "machine": machine(),
              "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
              "summary": summarize(runs), "per_call": per_call_costs(), "runs": runs}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics_cost.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "metrics_cost.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The composition root: one place that wires a run. `edgeomni run`, `edgeomni serve`, the benches and OTA all
open a `Runtime` and ask it for streams; nothing else builds engines, pools or pipelines.

    with Runtime.open(bundle_dir, config) as runtime:          # verify the bundle, load its engines once
        pipeline = runtime.stream(source, [JsonlSink("-")])    # one stream: its own heads on the shared engines
        end = await pipeline.run()
        ...
        await runtime.switch(new_bundle)                       # every running stream moves at its next pause

The engines are shared by every stream; the thread pool that runs them is the runtime's. A switch loads the new
bundle's engines off the event loop, all or nothing, before any stream is touched; streams opened afterwards
start on the new engines, running ones move head by head between utterances / blocks.

With `metrics` (a `RuntimeMetrics`), every model session is timed, every stream's events and counters are
observed and the OTA steps counted; without, nothing is wrapped and nothing costs.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

from edgeomni.bundle import VerifiedBundle, verify_bundle
from edgeomni.config import RunConfig
from edgeomni.engines.bundle_engines import Engines
from edgeomni.engines.session import session_hook
from edgeomni.errors import OtaError
from edgeomni.events import OtaEvent
from edgeomni.observability.metrics import RuntimeMetrics
from edgeomni.ota.updater import BundleUpdater, Report, bundle_updates
from edgeomni.pipeline import FrameTap, Pipeline
from edgeomni.sinks import Sink, SinkSet
from edgeomni.sources import Source


class Runtime:
    def __init__(self, config: RunConfig, engines: Engines, metrics: RuntimeMetrics | None = None) -> None:
        self.config, self.engines, self.metrics = config, engines, metrics
        self.executor = ThreadPoolExecutor(config.engine.workers, thread_name_prefix="edgeomni-infer")
        self._streams: weakref.WeakSet[Pipeline] = weakref.WeakSet()
        self.closed = False
        if metrics is not None:
            metrics.set_bundle(engines.bundle)

    @classmethod
    def open(cls, bundle: Path | VerifiedBundle, config: RunConfig, metrics: RuntimeMetrics | None = None) -> Runtime:
        """Verify `bundle` (the runtime never loads an unverified one) and load the engines `config` asks for."""
        verified = bundle if isinstance(bundle, VerifiedBundle) else verify_bundle(bundle)
        return cls(config, _load_engines(verified, config, metrics), metrics)

    @property
    def bundle(self) -> VerifiedBundle:
        return self.engines.bundle

    def stream(self, source: Source, sinks: SinkSet | Sequence[Sink], stream: str = "main",
               frame_tap: FrameTap | None = None) -> Pipeline:
        """A pipeline for `source` on the current engines; `pipeline.run()` drives it (inside a running loop)."""
        sink_set = sinks if isinstance(sinks, SinkSet) else SinkSet(list(sinks))
        pipeline = Pipeline(source, self.engines, sink_set, self.config, self.executor, stream, frame_tap,
                            observer=self.metrics)
        self._streams.add(pipeline)
        if self.metrics is not None:
            self.metrics.stream_opened(pipeline)
        return pipeline

    @property
    def streams(self) -> list[Pipeline]:
        return list(self._streams)

    async def switch(self, bundle: VerifiedBundle) -> None:
        """Move to `bundle`: its engines load in a thread (a bundle that cannot load, or whose VAD frames differ
        from the running one's, which the framers are sized by, is refused before anything changes); then new
        streams get them and every running stream switches at its own next pause."""
        engines = await asyncio.to_thread(self._load, bundle)
        previous, self.engines = self.engines, engines
        if self.metrics is not None:
            self.metrics.set_bundle(bundle)
        for pipeline in self.streams:
            if pipeline.engines is previous:
                pipeline.use_engines(engines)

    def _load(self, bundle: VerifiedBundle) -> Engines:
        engines = _load_engines(bundle, self.config, self.metrics)
        if engines.vad is not None and self.engines.vad is not None:
            new, running = engines.vad.frame_samples, self.engines.vad.frame_samples
            if new != running:
                raise OtaError(f"{engines.tag}: VAD frame size {new} differs from the running {running} samples; "
                               f"restart the device to change it")
        return engines

    def updates(self, report: Report) -> contextlib.AbstractAsyncContextManager[BundleUpdater | None]:
        """`async with runtime.updates(report):` signed bundle updates while the block runs, when `[ota]` is on;
        each verified bundle goes to `switch`, and every step is reported through `report`."""
        metrics = self.metrics
        if metrics is None:
            return bundle_updates(self.config.ota, self.bundle, self.switch, report)

        async def counted(event: OtaEvent) -> None:
            metrics.ota_step(event)
            await report(event)

        return bundle_updates(self.config.ota, self.bundle, self.switch, counted)

    def close(self) -> None:
        self.closed = True
        self.executor.shutdown(wait=True)

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def _load_engines(bundle: VerifiedBundle, config: RunConfig, metrics: RuntimeMetrics | None) -> Engines:
    if metrics is None:
        return Engines.load(bundle, config)
    with session_hook(metrics.session_timer(bundle)):  # every model call of these engines is timed
        return Engines.load(bundle, config)


__all__ = ["Runtime"]

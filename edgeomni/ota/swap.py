"""Moving running streams onto a newly installed bundle."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from edgeomni.bundle import VerifiedBundle
from edgeomni.config import RunConfig
from edgeomni.errors import OtaError
from edgeomni.pipeline import Engines, Pipeline


class EngineSwitch:
    """Loads a verified bundle's engines once, and one VAD per stream, off the loop; then hands them over.

    All or nothing: a bundle whose engines fail to load, or whose VAD frame size differs from the running
    one (the framers are sized by it), is refused before any stream is touched. Each stream then switches
    at its own next pause; the old engines are freed when the last stream lets go of them.
    """

    def __init__(self, config: RunConfig, pipelines: list[Pipeline] | Callable[[], list[Pipeline]], current: Engines,
                 on_loaded: Callable[[Engines], None] | None = None) -> None:
        """`pipelines`: the running streams, or a function giving them now (a server's come and go);
        `on_loaded`: told the new engines before any stream moves, so streams started from then on get them."""
        self.config, self.current, self.on_loaded = config, current, on_loaded
        self._pipelines = pipelines if callable(pipelines) else (lambda: pipelines)

    async def __call__(self, bundle: VerifiedBundle) -> None:
        engines = await asyncio.to_thread(self._load, bundle)
        if self.on_loaded is not None:
            self.on_loaded(engines)
        moving = [p for p in self._pipelines() if p.engines is not engines]
        vads = await asyncio.to_thread(lambda: [engines.new_vad() if engines.asr else None for _ in moving])
        for pipeline, vad in zip(moving, vads, strict=True):
            pipeline.use_engines(engines, vad)
        self.current = engines

    def _load(self, bundle: VerifiedBundle) -> Engines:
        engines = Engines.load(bundle, self.config)
        if engines.asr is not None and self.current.asr is not None:
            new, running = engines.new_vad().frame_samples, self.current.new_vad().frame_samples
            if new != running:
                raise OtaError(f"{engines.tag}: VAD frame size {new} differs from the running {running} samples; "
                               f"restart the device to change it")
        return engines

"""Moving running streams onto a newly installed bundle."""

from __future__ import annotations

import asyncio

from edgeomni.bundle import VerifiedBundle
from edgeomni.config import RunConfig
from edgeomni.engines.vad import SileroVad
from edgeomni.errors import OtaError
from edgeomni.pipeline import Engines, Pipeline


class EngineSwitch:
    """Loads a verified bundle's engines once, and one VAD per stream, off the loop; then hands them over.

    All or nothing: a bundle whose engines fail to load, or whose VAD frame size differs from the running
    one (the framers are sized by it), is refused before any stream is touched. Each stream then switches
    at its own next pause; the old engines are freed when the last stream lets go of them.
    """

    def __init__(self, config: RunConfig, pipelines: list[Pipeline], current: Engines) -> None:
        self.config, self.pipelines, self.current = config, pipelines, current

    async def __call__(self, bundle: VerifiedBundle) -> None:
        engines, vads = await asyncio.to_thread(self._load, bundle)
        for pipeline, vad in zip(self.pipelines, vads, strict=True):
            pipeline.use_engines(engines, vad)
        self.current = engines

    def _load(self, bundle: VerifiedBundle) -> tuple[Engines, list[SileroVad | None]]:
        engines = Engines.load(bundle, self.config)
        if engines.asr is None:
            return engines, [None] * len(self.pipelines)
        vads = [engines.new_vad() for _ in self.pipelines]
        running = self.current.new_vad().frame_samples if vads else None
        if vads and vads[0].frame_samples != running:
            raise OtaError(f"{engines.tag}: VAD frame size {vads[0].frame_samples} differs from the running "
                           f"{running} samples; restart the device to change it")
        return engines, vads

"""What is on screen, for one video stream: one labelling pass per 16-frame block, events on change."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor

from edgeomni.captions.events import CaptionEvent, MediaClock
from edgeomni.captions.speech import Emit
from edgeomni.chunking import VideoBlock, VideoBlocker
from edgeomni.config import VisualConfig
from edgeomni.engines.labeller import ImageLabeller, Label
from edgeomni.frames import VideoFrame


class VisualTagger:
    """Labels the newest frame of each block and tells the viewer only when the scene's top label changes.

    Video never queues: while a block is being labelled, a newer block replaces the waiting one and the
    replaced block is counted as skipped. Speech work is never held up by vision.
    """

    def __init__(self, stream: str, labeller: ImageLabeller, config: VisualConfig, executor: Executor,
                 emit: Emit, clock: MediaClock) -> None:
        self.stream = stream
        self._labeller, self._config, self._executor, self._emit, self._clock = labeller, config, executor, emit, clock
        self._blocker = VideoBlocker(config.block_frames)
        self._waiting: VideoBlock | None = None
        self._wakeup = asyncio.Event()
        self._done = False
        self._last_label: str | None = None
        self._worker = asyncio.create_task(self._label_loop(), name=f"vision:{stream}")
        self.blocks = 0
        self.skipped_blocks = 0
        self.vision_seconds = 0.0

    async def push(self, frame: VideoFrame) -> None:
        block = self._blocker.push(frame)
        if block is not None:
            self._offer(block)

    async def finish(self) -> None:
        block = self._blocker.flush()
        if block is not None:
            self._offer(block)
        self._done = True
        self._wakeup.set()
        await self._worker

    async def cancel(self) -> None:
        self._worker.cancel()
        await asyncio.gather(self._worker, return_exceptions=True)

    def counters(self) -> dict[str, float | int]:
        return {"video_blocks": self.blocks, "skipped_blocks": self.skipped_blocks,
                "vision_seconds": round(self.vision_seconds, 3)}

    def _offer(self, block: VideoBlock) -> None:
        self.blocks += 1
        if self._waiting is not None:
            self.skipped_blocks += 1
        self._waiting = block
        self._wakeup.set()

    async def _label_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._waiting is None:
                if self._done:
                    return
                await self._wakeup.wait()
                self._wakeup.clear()
                continue
            block, self._waiting = self._waiting, None
            started = time.perf_counter()
            labels = await loop.run_in_executor(self._executor, self._labeller, block.frames[-1].image,
                                                self._config.top_k)
            self.vision_seconds += time.perf_counter() - started
            await self._maybe_emit(block, labels)

    async def _maybe_emit(self, block: VideoBlock, labels: list[Label]) -> None:
        shown = [label for label in labels if label.score >= self._config.min_score]
        top = shown[0].name if shown else None
        if top == self._last_label:
            return
        self._last_label = top
        text = "on screen: " + ", ".join(label.name for label in shown) if shown else "on screen: (unclear)"
        await self._emit(CaptionEvent.stamped(
            "visual", self.stream, text, block.start, block.end, block.last_arrival, self._clock,
            labels=[{"label": label.name, "score": round(label.score, 3)} for label in labels],
            scene_change=True,
        ))

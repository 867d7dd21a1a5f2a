"""What is on screen, for one video stream: blocks of sampled frames in, visual events out on change.

Events go out when something changes - a new scene, new on-screen text, people entering or leaving -
never for every block. Budget and degradation: a visual event is due ``budget_ms`` after its
block's last frame. Video never queues and never delays speech:
- vision runs on its own single worker thread at a lower CPU priority (nice +10), so the speech
  engines' pool is never occupied by vision and the OS scheduler prefers speech on a busy machine;
- while a block is being analysed a newer block replaces the waiting one (the replaced one is counted
  as skipped);
- an event later than the budget halves the sampling rate (down to 1/max_sample_step), counted as a
  downshift; a run of fast blocks restores it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

from edgeomni.captions.head import HeadContext
from edgeomni.chunking import VideoBlock, VideoBlocker
from edgeomni.engines.bundle_engines import Engines
from edgeomni.events import VisualEvent
from edgeomni.frames import VideoFrame
from edgeomni.sources.base import Source
from edgeomni.vision.analyzer import BlockAnalyzer, VisionEngines
from edgeomni.vision.state import BlockFindings

_VISION_NICE = 10
_RECOVER_AFTER_BLOCKS = 8  # fast blocks in a row before a slowed-down sampling rate is raised again


def _lower_priority() -> None:
    """Runs in the vision thread: on Linux, nice applies per thread, so only vision yields to speech."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _VISION_NICE)


def describe(findings: BlockFindings, min_score: float, faces_before: int | None) -> str:
    """A short human sentence, e.g. 'slide: Quarterly results · Revenue up 12%' or 'on screen: tabby; 1 face'."""
    if findings.ocr:
        parts = ["slide: " + " · ".join(findings.ocr)]
    else:
        shown = [label.name for label in findings.labels if label.score >= min_score]
        parts = ["on screen: " + (", ".join(shown) if shown else "(unclear)")]
    if findings.faces:
        parts.append("1 face in view" if findings.faces == 1 else f"{findings.faces} faces in view")
    elif findings.faces == 0 and faces_before:
        parts.append("no one in view")
    return "; ".join(parts)


class VisualTagger:
    """The visual head: one per video stream; the models are shared, the blocker and scene state are not."""

    name: ClassVar[str] = "visual"
    frame_type: ClassVar[type[VideoFrame]] = VideoFrame

    @classmethod
    def open(cls, engines: Engines, source: Source, context: HeadContext) -> VisualTagger | None:
        if not engines.vision.any or not source.has_video:
            return None
        return cls(context, engines.vision)

    def __init__(self, context: HeadContext, engines: VisionEngines) -> None:
        """context.realtime=False (a file read as fast as possible): no block is skipped; push waits for vision
        instead."""
        config = context.config.visual
        self.stream, self.realtime = context.stream, context.realtime
        self._config, self._emit, self._clock = config, context.publish, context.clock
        self._analyzer = BlockAnalyzer(engines, config)
        self._blocker = VideoBlocker(config.block_frames, config.sample_fps, config.block_stride)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"vision-{self.stream}",
                                            initializer=_lower_priority)
        self._waiting: VideoBlock | None = None
        self._analysing_from: float | None = None  # start of the block the worker is analysing now
        self._seen_until = -math.inf  # media time of the newest frame pushed
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._done = False
        self._emitted_faces: int | None = None
        self._first = True
        self._fast_blocks = self._slow_blocks = 0
        self._pending: tuple[VisionEngines, Callable[[], None] | None] | None = None
        self._worker = asyncio.create_task(self._analyse_loop(), name=f"vision:{self.stream}")
        self.blocks = 0
        self.skipped_blocks = 0
        self.failed_blocks = 0
        self.over_budget = 0
        self.downshifts = 0
        self.vision_seconds = 0.0
        self.last_error: str | None = None

    def settled_until(self) -> float:
        """Media time before which every screen note of this stream is out (a note carries its block's start)."""
        candidates = [math.nextafter(self._seen_until, math.inf)]  # a note still to come starts after it
        for start in (self._blocker.open_from(), self._analysing_from,
                      self._waiting.start if self._waiting is not None else None):
            if start is not None:
                candidates.append(start)
        return min(candidates)

    async def push(self, frame: VideoFrame) -> None:
        self._seen_until = max(self._seen_until, frame.pts)
        block = self._blocker.push(frame)
        if block is not None:
            if not self.realtime:
                await self._idle.wait()
            self._offer(block)

    async def finish(self, last_arrival: float = 0.0) -> None:
        block = self._blocker.flush()
        if block is not None:
            if not self.realtime:
                await self._idle.wait()
            self._offer(block)
        self._done = True
        self._wakeup.set()
        try:
            await self._worker
        finally:
            self._executor.shutdown(wait=False)

    async def cancel(self) -> None:
        self._worker.cancel()
        await asyncio.gather(self._worker, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    def switch(self, engines: Engines, previous: Engines, applied: Callable[[], None]) -> None:
        """Every visual model (labeller, faces, OCR) moves at once; a bundle with none keeps the running ones."""
        if engines.vision.any:
            self.use_engines(engines.vision, applied)

    def use_engines(self, engines: VisionEngines, applied: Callable[[], None] | None = None) -> None:
        """Switch models (OTA) between blocks: no block is analysed half with the old, half with the new ones."""
        self._pending = (engines, applied)

    @property
    def compute_seconds(self) -> float:
        return self.vision_seconds

    def counters(self) -> dict[str, float | int | str | None]:
        return {"video_blocks": self.blocks, "skipped_blocks": self.skipped_blocks,
                "failed_blocks": self.failed_blocks, "visual_over_budget": self.over_budget,
                "sampling_downshifts": self.downshifts, "sample_step": self._blocker.step,
                "frames_seen": self._blocker.seen, "frames_sampled": self._blocker.sampled,
                **self._analyzer.state.counters(), "vision_seconds": round(self.vision_seconds, 3),
                "vision_error": self.last_error}

    def _offer(self, block: VideoBlock) -> None:
        self.blocks += 1
        if self._waiting is not None:
            self.skipped_blocks += 1
        self._waiting = block
        self._idle.clear()
        self._wakeup.set()

    async def _analyse_loop(self) -> None:
        try:
            await self._analyse_blocks()
        finally:
            self._idle.set()  # a dead worker must not leave push() waiting for ever

    async def _analyse_blocks(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._analyzer.engines.warm_up)
        except Exception as exc:  # a model that cannot run at all shows up on the first block too, with its block
            self.last_error = f"warm-up: {type(exc).__name__}: {exc}"
        while True:
            if self._waiting is None:
                self._idle.set()
                if self._done:
                    return
                await self._wakeup.wait()
                self._wakeup.clear()
                continue
            block, self._waiting = self._waiting, None
            self._analysing_from = block.start
            try:
                await self._analyse(loop, block)
            finally:
                self._analysing_from = None

    async def _analyse(self, loop: asyncio.AbstractEventLoop, block: VideoBlock) -> None:
        if self._pending is not None:
            (self._analyzer.engines, applied), self._pending = self._pending, None
            if applied is not None:
                applied()
        started = time.perf_counter()
        try:
            findings = await loop.run_in_executor(self._executor, self._analyzer, block)
        except Exception as exc:  # one undecodable block must not end the stream's vision
            self.failed_blocks += 1
            span = f"{block.start:.2f}-{block.end:.2f} s"
            self.last_error = f"block {block.index} ({span}): {type(exc).__name__}: {exc}"
            return
        finally:
            self.vision_seconds += time.perf_counter() - started
        if findings is not None:
            await self._maybe_emit(findings)
            if self.realtime:  # as-fast-as-possible input has no real-time budget to adapt to
                self._adapt((time.monotonic() - block.last_arrival) * 1000.0)

    def _adapt(self, latency_ms: float) -> None:
        """Declared degradation: slower sampling when an event misses the budget, restored once it keeps up."""
        if latency_ms > self._config.budget_ms:
            self.over_budget += 1
            self._fast_blocks, self._slow_blocks = 0, self._slow_blocks + 1
            # One slow block is expected (a slide change runs OCR); two in a row mean the machine is behind.
            can_slow = self._blocker.sample_fps > 0 and self._blocker.step < self._config.max_sample_step
            if self._slow_blocks >= 2 and can_slow:
                self._blocker.step = min(self._config.max_sample_step, self._blocker.step * 2)
                self.downshifts += 1
            return
        self._slow_blocks = 0
        if latency_ms < self._config.budget_ms / 4:
            self._fast_blocks += 1
            if self._fast_blocks >= _RECOVER_AFTER_BLOCKS and self._blocker.step > 1:
                self._blocker.step //= 2
                self._fast_blocks = 0

    async def _maybe_emit(self, findings: BlockFindings) -> None:
        faces_changed = findings.faces is not None and findings.faces != self._emitted_faces
        if not (self._first or findings.scene_change or findings.text_changed or faces_changed):
            return
        text = describe(findings, self._config.min_score, self._emitted_faces)
        self._first, self._emitted_faces = False, findings.faces
        await self._emit(VisualEvent.stamped(
            stream=self.stream, text=text, start=findings.start, end=findings.end,
            last_arrival=findings.last_arrival, clock=self._clock,
            labels=[{"label": label.name, "score": round(label.score, 3)} for label in findings.labels],
            faces=findings.faces, ocr=findings.ocr, scene_change=findings.scene_change, scene=findings.scene,
        ))

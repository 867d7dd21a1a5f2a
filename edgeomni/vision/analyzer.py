"""One block -> BlockFindings: thumbnails for every frame, models only where the picture changed.

Runs in a worker thread (numpy and onnxruntime release the GIL). Per block:
- every sampled frame gets a grey thumbnail and two change scores: against the current scene's
  reference (a new scene when above scene_threshold) and against the last analysed frame;
- if nothing moved beyond change_threshold, the previous labels/faces stand (counted as unchanged);
- otherwise the newest frame is labelled and its faces counted; the label probabilities are averaged
  over the scene's analysed frames (reset at each scene change);
- on-screen text is read only when the scene changed, or when the picture changed while the screen shows
  text (slides of one template differ only in their text); new text then counts as a new scene.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from edgeomni.chunking import VideoBlock
from edgeomni.config import VisualConfig
from edgeomni.engines.faces import FaceDetector
from edgeomni.engines.labeller import ImageLabeller, Label
from edgeomni.engines.ocr import TextReader
from edgeomni.frames import VideoFrame
from edgeomni.vision.change import change_score, thumbnail
from edgeomni.vision.state import BlockFindings, VisualState


@dataclass
class VisionEngines:
    """The visual models of a bundle; any of them may be absent (the bundle lacks it or config turned it off)."""

    labeller: ImageLabeller | None = None
    faces: FaceDetector | None = None
    reader: TextReader | None = None

    @property
    def any(self) -> bool:
        return any(e is not None for e in (self.labeller, self.faces, self.reader))

    def warm_up(self) -> None:
        """One pass of every model on a blank frame: ONNX Runtime's first run allocates and is several times
        slower, which would otherwise land on the first visual event's latency."""
        blank = np.zeros((360, 640, 3), np.uint8)
        blank[150:210, 200:440] = 255  # something for the text detector to look at
        if self.labeller is not None:
            self.labeller.features(blank)
        if self.faces is not None:
            self.faces(blank)
        if self.reader is not None:
            self.reader(blank)


def usable(frame: VideoFrame) -> bool:
    """A frame the models can read: HxWx3 uint8 with at least 2x2 pixels (a damaged decode may not be)."""
    image = frame.image
    return (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
            and image.shape[0] >= 2 and image.shape[1] >= 2)


class BlockAnalyzer:
    def __init__(self, engines: VisionEngines, config: VisualConfig) -> None:
        self.engines, self.config = engines, config
        self.state = VisualState()

    def __call__(self, block: VideoBlock) -> BlockFindings | None:
        started = time.thread_time()  # this thread's CPU only: waiting for a core under load is not compute
        try:
            return self._analyse_block(block)
        finally:
            self.state.cpu_seconds += time.thread_time() - started

    def _analyse_block(self, block: VideoBlock) -> BlockFindings | None:
        state, config = self.state, self.config
        frames = [f for f in block.frames if usable(f)]
        state.bad_frames += len(block.frames) - len(frames)
        state.frames += len(frames)
        if not frames:
            return None
        scene_change, largest = False, 0.0
        for frame in frames:
            thumb = thumbnail(frame.image)
            if state.scene_ref is None or change_score(thumb, state.scene_ref) > config.scene_threshold:
                state.scene_ref, scene_change = thumb, True
                state.scenes += 1
            moved = 1.0 if state.analysed_ref is None else change_score(thumb, state.analysed_ref)
            largest = max(largest, moved)
            if moved <= config.change_threshold:
                state.frames_unchanged += 1
        newest = frames[-1]
        analysed = scene_change or largest > config.change_threshold
        text_changed = False
        if analysed:
            state.frames_analysed += 1
            state.analysed_ref = thumbnail(newest.image)
            # Slides of one template differ only in their text (a small thumbnail change): while the screen
            # shows text, any change re-reads it, and new text is a new scene (a slide change).
            if self.engines.reader is not None and (scene_change or state.text):
                state.ocr_runs += 1
                text = [line.text for line in self.engines.reader(newest.image)]
                text_changed, state.text = text != state.text, text
                if text_changed and not scene_change:
                    scene_change, state.scene_ref = True, state.analysed_ref
                    state.scenes += 1
        seen = self._analyse(newest.image, scene_change) if analysed else None
        if self.engines.faces is not None:
            state.settle_faces(seen, scene_change, block.end, config.face_hold_s)
        return BlockFindings(start=block.start, end=block.end, last_arrival=block.last_arrival,
                             labels=self._labels(), faces=state.faces, ocr=list(state.text),
                             scene_change=scene_change, text_changed=text_changed, analysed=analysed,
                             change=round(largest, 4), scene=state.scenes)

    def _analyse(self, image: np.ndarray, new_scene: bool) -> int | None:
        """Label the frame (into the scene's running probabilities); returns its face count, if counted."""
        if self.engines.labeller is not None:
            self.state.add_probs(self.engines.labeller.features(image), new_scene)
        return len(self.engines.faces(image)) if self.engines.faces is not None else None

    def _labels(self) -> list[Label]:
        probs = self.state.mean_probs()
        if probs is None or self.engines.labeller is None:
            return []
        return self.engines.labeller.top(probs, self.config.top_k)

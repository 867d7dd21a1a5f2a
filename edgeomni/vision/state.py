"""The incremental visual state of one stream, and what one analysed block found."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgeomni.engines.labeller import Label


@dataclass(slots=True)
class BlockFindings:
    """What is on screen at the end of one block, and what changed during it."""

    start: float
    end: float
    last_arrival: float
    labels: list[Label]
    faces: int | None  # None: no face detector
    ocr: list[str]
    scene_change: bool
    text_changed: bool
    analysed: bool  # False: every frame matched the previous analysis, whose features were reused
    change: float  # largest change score in the block against the last analysed frame


@dataclass
class VisualState:
    """Running features of the current scene, its reference thumbnail, its text, and counts.

    Kept across blocks so that an unchanged frame costs a thumbnail and nothing else.
    """

    scene_ref: np.ndarray | None = None  # thumbnail of the first frame of the current scene
    analysed_ref: np.ndarray | None = None  # thumbnail of the last frame the models saw
    prob_sum: np.ndarray | None = None  # label probabilities summed over the scene's analysed frames
    prob_count: int = 0
    faces: int | None = None
    text: list[str] = field(default_factory=list)
    frames: int = 0
    frames_analysed: int = 0
    frames_unchanged: int = 0
    scenes: int = 0
    ocr_runs: int = 0
    bad_frames: int = 0
    cpu_seconds: float = 0.0  # CPU time of the vision thread (ONNX Runtime runs on it: 1 intra-op thread)

    def add_probs(self, probs: np.ndarray, new_scene: bool) -> None:
        if new_scene or self.prob_sum is None:
            self.prob_sum, self.prob_count = probs.astype(np.float64), 1
        else:
            self.prob_sum += probs
            self.prob_count += 1

    def mean_probs(self) -> np.ndarray | None:
        return None if self.prob_sum is None else self.prob_sum / self.prob_count

    def counters(self) -> dict[str, int | float]:
        return {"video_frames": self.frames, "frames_analysed": self.frames_analysed,
                "frames_unchanged": self.frames_unchanged, "scene_changes": self.scenes, "ocr_runs": self.ocr_runs,
                "bad_frames": self.bad_frames, "vision_cpu_seconds": round(self.cpu_seconds, 3)}

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
    scene: int = 0  # which scene of the stream this block belongs to (1 = the first)


@dataclass
class VisualState:
    """Running features of the current scene, its reference thumbnail, its text, and counts.

    Kept across blocks so that an unchanged frame costs a thumbnail and nothing else.
    """

    scene_ref: np.ndarray | None = None  # thumbnail of the first frame of the current scene
    analysed_ref: np.ndarray | None = None  # thumbnail of the last frame the models saw
    prob_sum: np.ndarray | None = None  # label probabilities summed over the scene's analysed frames
    prob_count: int = 0
    faces: int | None = None  # the count reported: a new count within a scene must hold face_hold_s first
    face_candidate: tuple[int, float] | None = None  # (count, media time first seen) waiting to be reported
    face_flickers: int = 0  # counts that went back before they held: a face turned away for a moment
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

    def settle_faces(self, seen: int | None, new_scene: bool, now: float, hold_s: float) -> None:
        """Hysteresis on the face count. `seen`: this block's count (None: not analysed, the frame looks as it
        did). A new scene reports its count at once (a cut brings new people); within a scene a changed count
        is reported once it has held for `hold_s` of media time, so a face turning away for a moment does
        not make the captions say "no one in view" and then "1 face in view" again."""
        if seen is not None:
            if new_scene or self.faces is None or hold_s <= 0:
                self.faces, self.face_candidate = seen, None
                return
            if seen == self.faces:
                if self.face_candidate is not None:
                    self.face_flickers += 1
                self.face_candidate = None
                return
            if self.face_candidate is None or self.face_candidate[0] != seen:
                self.face_candidate = (seen, now)
        if self.face_candidate is not None and now - self.face_candidate[1] >= hold_s:
            self.faces, self.face_candidate = self.face_candidate[0], None

    def mean_probs(self) -> np.ndarray | None:
        return None if self.prob_sum is None else self.prob_sum / self.prob_count

    def counters(self) -> dict[str, int | float]:
        return {"video_frames": self.frames, "frames_analysed": self.frames_analysed,
                "frames_unchanged": self.frames_unchanged, "scene_changes": self.scenes, "ocr_runs": self.ocr_runs,
                "bad_frames": self.bad_frames, "face_flickers": self.face_flickers,
                "vision_cpu_seconds": round(self.cpu_seconds, 3)}

"""Group decoded video frames into blocks (16 sampled frames by default) that know their media span.

Sampling works on timestamps, not frame counts, so it holds for any source rate and for variable
frame rate: a frame is kept when at least one sampling period has passed since the last kept one
(every frame at 15 fps, every 2nd at 30 fps for sample_fps=15). ``step`` slows sampling further
when the video path falls behind (declared and counted by the caller). ``stride`` < block size gives
overlapping blocks: a block is closed every ``stride`` new frames over the last ``block_frames``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeomni.frames import VideoFrame

# Timestamps are rounded by containers (1/90000, 1/1000 s); a frame a hair early still counts as due.
_TOLERANCE = 0.25


@dataclass(slots=True)
class VideoBlock:
    index: int
    frames: list[VideoFrame] = field(default_factory=list)
    partial: bool = False  # the stream ended before the block was full

    @property
    def start(self) -> float:
        return self.frames[0].pts

    @property
    def end(self) -> float:
        return self.frames[-1].pts

    @property
    def last_arrival(self) -> float:
        return self.frames[-1].arrival


class VideoBlocker:
    def __init__(self, block_frames: int = 16, sample_fps: float = 0.0, stride: int = 0) -> None:
        if block_frames < 1:
            raise ValueError(f"block_frames must be >= 1, got {block_frames}")
        if not 0 <= stride <= block_frames:
            raise ValueError(f"stride must be in 0..block_frames ({block_frames}), got {stride}")
        self.block_frames = block_frames
        self.sample_fps = sample_fps
        self.stride = stride or block_frames
        self.step = 1  # sampling period multiplier; raised by the caller when the video path is behind
        self.seen = 0
        self.sampled = 0
        self._frames: list[VideoFrame] = []
        self._new_since_block = 0
        self._next_due: float | None = None
        self._count = 0

    @property
    def period(self) -> float:
        """Seconds between kept frames (0: keep every frame)."""
        return self.step / self.sample_fps if self.sample_fps > 0 else 0.0

    def keeps(self, frame: VideoFrame) -> bool:
        period = self.period
        if self._next_due is not None and frame.pts < self._next_due - _TOLERANCE * period:
            return False
        # Anchored on the kept frame's own time, so jitter and VFR gaps never accumulate into drift.
        self._next_due = frame.pts + period
        return True

    def push(self, frame: VideoFrame) -> VideoBlock | None:
        self.seen += 1
        if self.period and not self.keeps(frame):
            return None
        self.sampled += 1
        self._frames.append(frame)
        self._new_since_block += 1
        if len(self._frames) < self.block_frames or self._new_since_block < self.stride:
            return None
        return self._close(partial=False)

    def open_from(self) -> float | None:
        """Media time of the first frame held for the next block (None when none is held)."""
        return self._frames[0].pts if self._frames else None

    def flush(self) -> VideoBlock | None:
        """A stream that stops mid-block still gets its partial block processed."""
        return self._close(partial=True) if self._new_since_block else None

    def _close(self, partial: bool) -> VideoBlock:
        block = VideoBlock(self._count, list(self._frames[-self.block_frames:]), partial)
        self._count += 1
        self._new_since_block = 0
        # Overlapping blocks keep the newest (block_frames - stride) frames for the next block.
        keep = self.block_frames - self.stride
        self._frames = self._frames[len(self._frames) - keep:] if keep else []
        return block

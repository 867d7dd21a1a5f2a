"""Group decoded video frames into fixed-size blocks (16 frames by default) that know their media span."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeomni.frames import VideoFrame


@dataclass(slots=True)
class VideoBlock:
    index: int
    frames: list[VideoFrame] = field(default_factory=list)

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
    def __init__(self, block_frames: int = 16) -> None:
        self.block_frames = block_frames
        self._current = VideoBlock(0)
        self._count = 0

    def push(self, frame: VideoFrame) -> VideoBlock | None:
        self._current.frames.append(frame)
        if len(self._current.frames) < self.block_frames:
            return None
        return self._close()

    def flush(self) -> VideoBlock | None:
        """A stream that stops mid-block still gets its partial block processed."""
        return self._close() if self._current.frames else None

    def _close(self) -> VideoBlock:
        block = self._current
        self._count += 1
        self._current = VideoBlock(self._count)
        return block

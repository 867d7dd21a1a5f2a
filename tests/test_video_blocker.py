"""VideoBlocker: 16-frame blocks, timestamp-based sampling (also for VFR), stride, partial blocks; config checks."""

from __future__ import annotations

import numpy as np
import pytest

from edgeomni.chunking import VideoBlocker
from edgeomni.config import VisualConfig
from edgeomni.errors import ConfigError
from edgeomni.frames import VideoFrame

IMAGE = np.zeros((4, 4, 3), np.uint8)


def frames(times: list[float]) -> list[VideoFrame]:
    return [VideoFrame(IMAGE, pts=t, arrival=100.0 + t, index=i) for i, t in enumerate(times)]


def blocks_of(blocker: VideoBlocker, times: list[float]) -> list:
    out = [b for f in frames(times) if (b := blocker.push(f)) is not None]
    tail = blocker.flush()
    return out + ([tail] if tail is not None else [])


def test_every_frame_at_15fps_and_every_second_at_30fps() -> None:
    at15 = blocks_of(VideoBlocker(16, sample_fps=15), [i / 15 for i in range(32)])
    assert [len(b.frames) for b in at15] == [16, 16] and not any(b.partial for b in at15)
    at30 = blocks_of(VideoBlocker(16, sample_fps=15), [i / 30 for i in range(64)])
    assert [len(b.frames) for b in at30] == [16, 16]
    assert [f.index for f in at30[0].frames] == list(range(0, 32, 2))
    assert at30[0].start == 0.0 and at30[0].end == pytest.approx(30 / 30)
    assert at30[1].last_arrival == pytest.approx(100.0 + 62 / 30)


def test_zero_sample_rate_keeps_every_frame() -> None:
    blocker = VideoBlocker(4, sample_fps=0)
    assert [len(b.frames) for b in blocks_of(blocker, [i / 60 for i in range(8)])] == [4, 4]
    assert blocker.seen == blocker.sampled == 8


def test_variable_frame_rate_is_sampled_by_time() -> None:
    # Gaps alternate 1/30 and 3/30 s (a phone camera dropping frames); sampling at 10 fps keeps frames >= 0.1 s apart
    # (within tolerance) and never two within one period.
    times, t = [], 0.0
    for i in range(60):
        times.append(round(t, 4))
        t += (1 if i % 2 else 3) / 30
    blocker = VideoBlocker(8, sample_fps=10)
    kept = [f.pts for b in blocks_of(blocker, times) for f in b.frames]
    gaps = np.diff(kept)
    assert gaps.min() >= 0.75 * 0.1 and gaps.max() <= 0.1 + 3 / 30 + 1e-6
    assert len(kept) >= times[-1] / (0.1 + 3 / 30)  # the first frame due after each period, never fewer


def test_stride_gives_overlapping_blocks() -> None:
    blocks = blocks_of(VideoBlocker(4, stride=2), [float(i) for i in range(8)])
    assert [[f.pts for f in b.frames] for b in blocks] == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7]]


def test_stream_ending_mid_block_gets_a_partial_block() -> None:
    blocker = VideoBlocker(16)
    blocks = blocks_of(blocker, [i / 15 for i in range(20)])
    assert [len(b.frames) for b in blocks] == [16, 4]
    assert blocks[-1].partial and blocks[-1].end == pytest.approx(19 / 15)
    assert blocker.flush() is None  # nothing left twice


def test_step_slows_sampling_when_behind() -> None:
    blocker = VideoBlocker(4, sample_fps=15)
    blocker.step = 2
    kept = [f.index for b in blocks_of(blocker, [i / 15 for i in range(16)]) for f in b.frames]
    assert kept == list(range(0, 16, 2))


def test_bad_blocker_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="block_frames"):
        VideoBlocker(0)
    with pytest.raises(ValueError, match="stride"):
        VideoBlocker(4, stride=5)


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("sample_fps", 0.1, "or 0.5..120"), ("block_stride", 17, "0..block_frames"),
    ("scene_threshold", 0.005, "change_threshold"), ("budget_ms", 5, "20..10000"), ("max_sample_step", 0, "1..32"),
])
def test_visual_config_names_bad_fields(field: str, value: float, expected: str) -> None:
    config = VisualConfig(**{field: value})
    with pytest.raises(ConfigError, match=f"visual.{field}: expected .*{expected}"):
        config.validate()


def test_open_from_is_the_first_frame_held_for_the_next_block() -> None:
    blocker = VideoBlocker(4, stride=2)
    assert blocker.open_from() is None
    pushed = [blocker.push(f) for f in frames([0.0, 0.1, 0.2, 0.3, 0.4])]
    assert pushed[3] is not None and pushed[3].start == 0.0
    assert blocker.open_from() == 0.2  # the overlap kept for the next block, which will start there
    assert [b.start for b in [blocker.push(f) for f in frames([0.5])] if b] == [0.2]

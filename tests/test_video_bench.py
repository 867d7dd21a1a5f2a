"""`edgeomni bench video` plumbing: one real-time pass through the real CLI, and its report."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from media_factory import make_scene_clip, render_photo, render_slide

from edgeomni.bench.video import run_pass
from edgeomni.bench.video_cli import _sizes
from edgeomni.bench.video_report import write_video_report


def test_sizes_are_checked() -> None:
    assert _sizes("1080p,480p") == ["480p", "1080p"]
    with pytest.raises(argparse.ArgumentTypeError, match="4k"):
        _sizes("480p,4k")


@pytest.mark.slow
def test_one_real_time_pass_and_its_report(default_bundle: Path, tmp_path: Path) -> None:
    clip = make_scene_clip(tmp_path / "clip.mp4", [render_slide("Quarterly results"), render_photo("chelsea")],
                           seconds_each=1.2, fps=30)
    result = run_pass(default_bundle, clip, {"labeller": "fp32"}, ["--no-speech"])
    assert result["media_seconds"] == pytest.approx(2.4, abs=0.1)
    assert result["wall_seconds"] >= 2.0  # paced in real time, not as fast as possible
    assert result["cpu_seconds"] > 0 and result["latency_ms"]["visual"]["n"] == len(result["visual_texts"]) >= 2
    assert result["visual_texts"][0].startswith("slide: Quarterly results")
    assert result["counters"]["scene_changes"] == 2 and result["counters"]["frames_sampled"] < 72  # 15 of 30 fps
    json_path, md_path = write_video_report({"passes": {"720p-fp32": result}, "options": {
        "sizes": ["720p"], "seconds_each": 1.2, "runs": 1, "fps": 30}}, tmp_path / "out", "edgeomni bench video")
    assert json_path.is_file() and "| 720p-fp32 |" in md_path.read_text()

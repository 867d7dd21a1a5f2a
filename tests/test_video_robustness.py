"""The video path on awkward input: video-only, audio-only, VFR, a stream ending mid-block, a corrupt frame,
an odd resolution and rotation metadata. Each runs the real CLI on a generated file."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from media_factory import (
    make_clip_with_corrupt_frame,
    make_scene_clip,
    make_speech_wav,
    render_photo,
    render_slide,
    set_rotation,
)
from video_cli import end, event_at, run_cli, visual

pytestmark = pytest.mark.slow


def test_video_only_file(default_bundle: Path, tmp_path: Path) -> None:
    clip = make_scene_clip(tmp_path / "silent.mp4", [render_slide("Quarterly results"), render_photo("astronaut")],
                           seconds_each=2)
    code, events, err = run_cli(default_bundle, clip, "--no-realtime", "--no-speech")
    assert code == 0, err
    assert [e["ocr"] for e in visual(events) if e["scene_change"]] == [["Quarterly results"], []]
    assert event_at(events, 3.9)["faces"] == 1
    assert not [e for e in events if e["type"] in ("final", "partial")]


def test_audio_only_file_has_no_video_path(default_bundle: Path, tmp_path: Path) -> None:
    wav = make_speech_wav(tmp_path / "speech.wav", "Thank you for listening.", speed=150)
    code, events, err = run_cli(default_bundle, wav, "--no-realtime")
    assert code == 0, err
    assert visual(events) == [] and "video_blocks" not in end(events)["counters"]
    assert "listening" in " ".join(e["text"] for e in events if e["type"] == "final").lower()


def test_variable_frame_rate_file(default_bundle: Path, tmp_path: Path) -> None:
    clip = make_scene_clip(tmp_path / "vfr.mp4", [render_slide("Quarterly results"), render_photo("chelsea")],
                           seconds_each=3, vfr=True)
    with av.open(str(clip)) as container:
        gaps = np.diff([float(f.time) for f in container.decode(video=0)])
    assert gaps.max() > 1.8 * gaps.min()  # the file really is VFR (1/15 and 2/15 s apart)
    code, events, err = run_cli(default_bundle, clip, "--no-realtime", "--no-speech")
    assert code == 0, err
    scenes = [e for e in visual(events) if e["scene_change"]]
    assert [e["ocr"] for e in scenes] == [["Quarterly results"], []]
    assert 1.5 <= scenes[1]["start"] <= 3.0 <= scenes[1]["end"] + 0.15  # media times follow the timestamps
    assert end(events)["media_seconds"] == pytest.approx(6.0, abs=0.25)


def test_stream_ending_mid_block_processes_the_partial_block(default_bundle: Path, tmp_path: Path) -> None:
    # 16 frames of the portrait (one full block), then 5 frames of a slide: the slide exists only in the partial block.
    scenes = [render_photo("astronaut")] * 16 + [render_slide("Fail better")] * 5
    clip = make_scene_clip(tmp_path / "short.mp4", scenes, seconds_each=1 / 15)
    code, events, err = run_cli(default_bundle, clip, "--no-realtime", "--no-speech")
    assert code == 0, err
    counters = end(events)["counters"]
    assert counters["video_blocks"] == 2 and counters["video_frames"] == 21
    last = visual(events)[-1]
    assert last["ocr"] == ["Fail better"] and last["scene_change"] and last["end"] == pytest.approx(20 / 15, abs=0.01)


def test_corrupt_frame_is_skipped_counted_and_the_stream_goes_on(default_bundle: Path, tmp_path: Path) -> None:
    scenes = [render_slide("Quarterly results"), render_photo("chelsea"), render_slide("Fail better")]
    clip = make_clip_with_corrupt_frame(tmp_path / "damaged.mkv", scenes, bad_frame=40, seconds_each=2)
    code, events, _ = run_cli(default_bundle, clip, "--no-realtime", "--no-speech")
    record = end(events)
    # The file is reported as damaged (exit 1, an error line naming it and the bad packet) ...
    assert code == 1 and "damaged.mkv" in record["error"] and "1 packet could not be decoded" in record["error"]
    assert [e for e in events if e["type"] == "error"]
    # ... but only that frame is missing: the scenes after it are still read.
    assert record["counters"]["frames_seen"] == 89
    assert [e["ocr"] for e in visual(events) if e["scene_change"]] == [["Quarterly results"], [], ["Fail better"]]


def test_odd_resolution_641x359(default_bundle: Path, tmp_path: Path) -> None:
    size = (641, 359)
    clip = make_scene_clip(tmp_path / "odd.mp4", [render_slide("Quarterly results", "", size),
                                                   render_photo("astronaut", size)], seconds_each=2,
                           pix_fmt="yuv444p")  # 4:2:0 needs even sizes; 4:4:4 keeps 641x359 as it is
    with av.open(str(clip)) as container:
        assert (container.streams.video[0].width, container.streams.video[0].height) == size
    code, events, err = run_cli(default_bundle, clip, "--no-realtime", "--no-speech")
    assert code == 0, err
    assert [e["ocr"] for e in visual(events) if e["scene_change"]] == [["Quarterly results"], []]
    assert event_at(events, 3.9)["faces"] == 1


@pytest.mark.parametrize("degrees", [90, 270])
def test_rotation_metadata_is_applied(default_bundle: Path, tmp_path: Path, degrees: int) -> None:
    # Stored sideways (as a phone records), with a display matrix saying how to turn it upright:
    # the slide is only readable if the runtime applies the rotation.
    slide = render_slide("Quarterly results", "Revenue up 12%")
    stored = np.ascontiguousarray(np.rot90(slide, k=-degrees // 90))
    sideways = make_scene_clip(tmp_path / "sideways.mp4", [stored], seconds_each=1.5)
    clip = set_rotation(sideways, tmp_path / "rotated.mp4", degrees)
    code, events, err = run_cli(default_bundle, clip, "--no-realtime", "--no-speech")
    assert code == 0, err
    start = next(e for e in events if e["type"] == "start")
    assert visual(events)[0]["ocr"] == ["Quarterly results", "Revenue up 12%"], start["describe"]


def test_a_face_turning_away_for_a_moment_does_not_flicker_the_count(default_bundle: Path, tmp_path: Path) -> None:
    """The portrait's face is covered for 0.47 s (one block's analysed frame) at 4 s and for 3 s from 7 s.
    With the default face_hold_s the short gap is not reported and the long one is, once each way; with
    face_hold_s = 0 (no hysteresis) the short gap shows up as "no one in view" then "1 face in view"."""
    from edgeomni.bundle import verify_bundle
    from edgeomni.engines.faces import FaceDetector

    portrait = render_photo("astronaut")
    x0, y0, x1, y1 = FaceDetector(verify_bundle(default_bundle))(portrait)[0].box
    h, w = portrait.shape[:2]
    covered = portrait.copy()
    pad_x, pad_y = 0.25 * (x1 - x0) * w, 0.25 * (y1 - y0) * h
    covered[max(0, int(y0 * h - pad_y)):int(y1 * h + pad_y), max(0, int(x0 * w - pad_x)):int(x1 * w + pad_x)] = 128

    def turn_away(image: np.ndarray, index: int) -> np.ndarray:  # 15 fps: frames 60-66 and 105-149
        return covered if 60 <= index <= 66 or 105 <= index <= 149 else image

    clip = make_scene_clip(tmp_path / "portrait.mp4", [portrait], seconds_each=13.0, fps=15, animate=turn_away)
    counts = {}
    for hold in (1.0, 0.0):
        config = tmp_path / f"hold{hold}.toml"
        config.write_text(f"[visual]\nface_hold_s = {hold}\n")
        code, events, err = run_cli(default_bundle, clip, "--no-realtime", "--no-speech", "--config", str(config))
        assert code == 0, err
        counts[hold] = ([e["faces"] for e in visual(events)], end(events)["counters"]["face_flickers"])
    assert counts[1.0] == ([1, 0, 1], 1)  # the long absence, once each way; the short one counted as a flicker
    assert counts[0.0] == ([1, 0, 1, 0, 1], 0)

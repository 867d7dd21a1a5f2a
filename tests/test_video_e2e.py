"""Acceptance for the video path: real photos and slides with known text, real speech, through `edgeomni run`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from media_factory import make_scene_clip, make_speech_wav, render_photo, render_slide
from video_cli import end, event_at, run_cli, visual

from edgeomni.wer import wer

SPEECH = "Welcome to the quarterly review. Thank you for listening."
HOLD = 3.0  # seconds each scene is held
SCENES: list[tuple[str, Any]] = [
    ("astronaut", lambda: render_photo("astronaut")),
    ("slide", lambda: render_slide("Quarterly results", "Revenue up 12%")),
    ("chelsea", lambda: render_photo("chelsea")),
    ("slide", lambda: render_slide("EXIT 42 - Main Street")),
    ("coffee", lambda: render_photo("coffee")),
]


@pytest.fixture(scope="module")
def acceptance(default_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], Path]:
    tmp = tmp_path_factory.mktemp("video_acceptance")
    speech = make_speech_wav(tmp / "speech.wav", SPEECH, speed=150)
    clip = make_scene_clip(tmp / "scenes.mp4", [make() for _, make in SCENES], seconds_each=HOLD, speech=speech)
    vtt = tmp / "out.vtt"
    code, events, err = run_cli(default_bundle, clip, "--no-realtime", "--sink", f"vtt:{vtt}")
    assert code == 0, err
    return events, vtt


@pytest.mark.slow
def test_slide_texts_faces_and_each_scene_change_once(acceptance: tuple[list[dict], Path]) -> None:
    events, _ = acceptance
    scenes = [e for e in visual(events) if e["scene_change"]]
    assert len(scenes) == len(SCENES), [e["text"] for e in visual(events)]
    for i, event in enumerate(scenes):  # each change lands in the block that contains the cut
        assert i * HOLD - 1.2 <= event["start"] <= i * HOLD + 0.1 and event["end"] >= i * HOLD, (i, event)
    portrait, slide1, cat, slide2, cup = (event_at(events, (i + 1) * HOLD - 0.2) for i in range(len(SCENES)))
    assert portrait["faces"] == 1 and "1 face in view" in portrait["text"]
    assert cat["faces"] == 0 and cup["faces"] == 0
    assert any(label["label"] in ("tabby", "tiger cat", "Egyptian cat") for label in cat["labels"]), cat
    assert slide1["ocr"] == ["Quarterly results", "Revenue up 12%"]
    assert slide1["text"].startswith("slide: Quarterly results · Revenue up 12%")
    assert slide2["ocr"] == ["EXIT 42 - Main Street"]
    assert portrait["ocr"] == cat["ocr"] == cup["ocr"] == []
    for event in visual(events):  # the JSONL contract of a visual event
        assert {"labels", "faces", "ocr", "scene_change", "start", "end", "emitted", "latency_ms", "text"} <= set(event)


@pytest.mark.slow
def test_speech_is_captioned_alongside_and_counters_add_up(acceptance: tuple[list[dict], Path]) -> None:
    events, vtt = acceptance
    spoken = " ".join(e["text"] for e in events if e["type"] == "final")
    # A sanity bound (speech accuracy has its own tests): espeak's "quarterly review" decodes as
    # "quarterly renew" / "Nakwaterly Renew" depending on context; what matters here is that both heads ran.
    assert wer(SPEECH, spoken) <= 0.4 and "thank you for listening" in spoken.lower(), spoken
    counters = end(events)["counters"]
    assert counters["scene_changes"] == len(SCENES) and counters["ocr_runs"] == len(SCENES)
    assert counters["skipped_blocks"] == 0 and counters["bad_frames"] == 0  # --no-realtime: nothing skipped
    # Change-skipping: only scene changes needed the models; held frames reused their features.
    assert counters["frames_analysed"] == len(SCENES)
    assert counters["frames_unchanged"] >= 0.8 * counters["video_frames"] - len(SCENES) * 16
    cues = vtt.read_text()
    assert cues.startswith("WEBVTT") and "[screen] slide: Quarterly results · Revenue up 12%" in cues
    assert "[screen] slide: EXIT 42 - Main Street" in cues and "thank you for listening" in cues.lower()

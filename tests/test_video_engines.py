"""Video path engines on real photos and rendered slides: faces, on-screen text, change scores, the bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from media_factory import render_photo, render_slide

from edgeomni.bundle import verify_bundle
from edgeomni.config import VisualConfig
from edgeomni.engines.faces import FaceDetector, ssd_anchors
from edgeomni.engines.ocr import TextReader, _runs
from edgeomni.export.default.build import BUNDLE_VERSION
from edgeomni.vision.change import change_score, thumbnail

SLIDES = [("Quarterly results", "Revenue up 12%"), ("EXIT 42 - Main Street", ""), ("Fail better", "Samuel Beckett")]


@pytest.fixture(scope="module")
def faces(default_bundle: Path) -> FaceDetector:
    return FaceDetector(verify_bundle(default_bundle))


@pytest.fixture(scope="module")
def reader(default_bundle: Path) -> TextReader:
    return TextReader(verify_bundle(default_bundle))


def test_bundle_carries_the_video_engines(default_bundle: Path) -> None:
    manifest = verify_bundle(default_bundle).manifest
    assert manifest.version == BUNDLE_VERSION == "1.3.0"
    for role in ("face-detector", "ocr-detector", "ocr-recognizer", "ocr-dictionary", "image-labeller",
                 "overlay-glyphs"):
        assert manifest.has_role(role), role
    faces = manifest.by_role("face-detector")
    assert faces.provenance["package"] == "mediapipe" and faces.inputs[0].shape == [1, 3, 128, 128]
    keys = (default_bundle / manifest.by_role("ocr-dictionary").file).read_text(encoding="utf-8").splitlines()
    rec_classes = manifest.by_role("ocr-recognizer").outputs[0].shape[-1]
    assert len(keys) + 2 == rec_classes  # + CTC blank + trailing space


def test_anchor_layout_matches_the_model_output(faces: FaceDetector) -> None:
    assert ssd_anchors(128, [8, 16], [2, 6]).shape == (896, 2)
    assert faces._session.get_outputs()[0].shape[1] == 896


@pytest.mark.parametrize("size", [(640, 360), (1280, 720), (360, 640)])
def test_one_face_on_the_portrait_none_on_the_cat_or_the_cup(faces: FaceDetector, size: tuple[int, int]) -> None:
    found = faces(render_photo("astronaut", size))
    assert len(found) == 1, found
    x0, y0, x1, y1 = found[0].box
    assert 0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0
    assert abs((x0 + x1) / 2 - 0.47) < 0.12  # the astronaut's face is near the centre of the letterboxed frame
    assert faces(render_photo("chelsea", size)) == []
    assert faces(render_photo("coffee", size)) == []


@pytest.mark.parametrize(("title", "subtitle"), SLIDES)
def test_slide_text_is_read_exactly(reader: TextReader, title: str, subtitle: str) -> None:
    lines = reader(render_slide(title, subtitle))
    assert [line.text for line in lines] == [t for t in (title, subtitle) if t]
    assert all(line.score > 0.8 for line in lines)
    assert lines[0].box[1] < lines[-1].box[1] or len(lines) == 1  # top to bottom


def test_slide_text_at_1080p_and_odd_size(reader: TextReader) -> None:
    for size in ((1920, 1080), (641, 359)):
        assert [line.text for line in reader(render_slide("Quarterly results", "", size))] == ["Quarterly results"]


def test_photos_have_no_text(reader: TextReader) -> None:
    for name in ("astronaut", "chelsea", "coffee"):
        assert reader(render_photo(name)) == [], name


def test_runs_merge_small_gaps() -> None:
    mask = np.array([0, 1, 1, 0, 1, 0, 0, 0, 1], bool)
    assert _runs(mask) == [(1, 3), (4, 5), (8, 9)]
    assert _runs(mask, max_gap=1) == [(1, 5), (8, 9)]
    assert _runs(np.zeros(5, bool)) == []


def test_change_score_separates_noise_and_a_moving_mouth_from_slide_changes_and_cuts() -> None:
    config = VisualConfig()
    rng = np.random.default_rng(0)
    slide = render_slide("Quarterly results", "Revenue up 12%")
    noisy = np.clip(slide.astype(np.int16) + rng.integers(-6, 7, slide.shape), 0, 255).astype(np.uint8)
    portrait = render_photo("astronaut")
    speaking = portrait.copy()
    speaking[108:130, 294:333] = (speaking[108:130, 294:333] * 0.4).astype(np.uint8)  # the mouth region darkens
    cat, cup = render_photo("chelsea"), render_photo("coffee")

    def score(a: np.ndarray, b: np.ndarray) -> float:
        return change_score(thumbnail(a), thumbnail(b))

    assert thumbnail(slide).shape == thumbnail(render_slide("x", "", (1920, 1080))).shape == (36, 64)
    assert score(slide, slide) == 0.0
    assert score(slide, noisy) < config.change_threshold  # codec-like noise: reuse the features
    assert score(portrait, speaking) < config.change_threshold  # a talking head: reuse the features
    assert config.change_threshold < score(slide, render_slide("Fail better", "Beckett")) < config.scene_threshold
    for a, b in ((slide, cat), (cat, cup), (portrait, cat), (portrait, slide)):
        assert score(a, b) > config.scene_threshold  # a cut: a new scene


def test_analyzer_reads_same_template_slides_and_reuses_unchanged_blocks(default_bundle: Path,
                                                                          reader: TextReader) -> None:
    from edgeomni.chunking import VideoBlock
    from edgeomni.frames import VideoFrame
    from edgeomni.vision.analyzer import BlockAnalyzer, VisionEngines

    def block(index: int, image: np.ndarray) -> VideoBlock:
        return VideoBlock(index, [VideoFrame(image, pts=index + i / 4, arrival=0.0) for i in range(4)])

    first, second = render_slide("A Tale of Two Cities", "Charles Dickens"), render_slide("Fail better", "Beckett")
    config = VisualConfig()
    # Same template: the thumbnails differ by less than a scene cut, only the text tells the slides apart.
    assert config.change_threshold < change_score(thumbnail(first), thumbnail(second)) < config.scene_threshold
    analyse = BlockAnalyzer(VisionEngines(reader=reader), config)
    found = [analyse(block(i, image)) for i, image in enumerate((first, second, second))]
    assert [f.ocr for f in found] == [["A Tale of Two Cities", "Charles Dickens"], ["Fail better", "Beckett"],
                                      ["Fail better", "Beckett"]]
    assert [f.scene_change for f in found] == [True, True, False]
    assert [f.analysed for f in found] == [True, True, False]  # the held slide reused what was read
    counters = analyse.state.counters()
    assert counters["ocr_runs"] == 2 and counters["scene_changes"] == 2 and counters["frames_unchanged"] == 4
    corrupt = VideoBlock(3, [VideoFrame(np.zeros((0, 0, 3), np.uint8), 3.0, 0.0),
                             VideoFrame(np.zeros((4, 4), np.uint8), 3.1, 0.0)])
    assert analyse(corrupt) is None and analyse.state.bad_frames == 2  # unreadable frames: skipped and counted

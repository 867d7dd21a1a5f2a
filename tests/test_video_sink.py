"""`--sink video:PATH`: captions and screen notes burned into the frames, checked by reading them back with OCR,
and the sound written beside them, checked by captioning the output again."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from media_factory import make_scene_clip, make_speech_wav, render_photo, render_slide
from video_cli import run_cli, visual

from edgeomni.bundle import verify_bundle
from edgeomni.engines.ocr import TextReader
from edgeomni.sinks.overlay import GlyphFont, draw_lines
from edgeomni.sinks.video import CaptionBoard
from edgeomni.wer import wer


@pytest.fixture(scope="module")
def font(default_bundle: Path) -> GlyphFont:
    return GlyphFont(verify_bundle(default_bundle).role_file("overlay-glyphs"))


def test_glyph_font_measures_wraps_and_draws(font: GlyphFont) -> None:
    assert font.measure("ii") < font.measure("WW") and font.measure("") == 0
    assert font.render("Hello").shape == (font.height, font.measure("Hello"))
    lines = font.wrap("one two three four five six seven eight nine ten", font.measure("one two three"), 2)
    assert len(lines) == 2 and lines[-1].endswith("ten")  # the newest words are kept
    assert all(font.measure(line) <= font.measure("one two three") for line in lines)
    assert font.wrap("slide: A · B", 10_000) == ["slide: A - B"]  # typographic characters drawn as ASCII
    image = np.full((120, 320, 3), 200, np.uint8)
    draw_lines(image, ["Hi"], font, bottom=110)
    assert (image[:60] == 200).all()  # nothing drawn above the band
    band = image[110 - font.height - 10:110]
    assert band.max() == 255 and band.min() < 100  # white text on a darkened band


def test_caption_board_shows_what_covers_each_moment() -> None:
    board = CaptionBoard()
    board.update({"type": "visual", "start": 0.0, "end": 1.0, "text": "slide: Intro"})
    board.update({"type": "partial", "start": 1.0, "end": 1.5, "text": "Hello th"})
    assert board.at(0.5) == ("", "slide: Intro")
    assert board.at(1.6) == ("Hello th", "slide: Intro")
    board.update({"type": "final", "start": 1.0, "end": 2.0, "text": "Hello there."})
    board.update({"type": "visual", "start": 3.0, "end": 4.0, "text": "on screen: cat"})
    assert board.at(1.8) == ("Hello there.", "slide: Intro")
    assert board.at(3.5) == ("Hello there.", "on screen: cat")  # a final is held a while after its speech
    assert board.at(9.0) == ("", "on screen: cat")


@pytest.mark.slow
def test_burned_in_output_reads_back_as_the_captions(default_bundle: Path, tmp_path: Path) -> None:
    speech = make_speech_wav(tmp_path / "speech.wav", "Thank you for listening.", speed=140)
    clip = make_scene_clip(tmp_path / "in.mp4", [render_slide("Quarterly results"), render_photo("chelsea")],
                           seconds_each=2.5, speech=speech, speech_at=0.5)
    out = tmp_path / "captioned.mp4"
    # Paced as a camera would be: the sink holds each frame 1 s (wall) after it arrives for its captions, a hold
    # that an unpaced file source (--no-realtime) spends at once for every frame, which on a loaded machine can
    # end before the first note is out (the file would still be written, just without that note).
    code, events, err = run_cli(default_bundle, clip, "--sink", f"video:{out}")
    assert code == 0, err
    with av.open(str(clip)) as source:
        source_times = [round(float(f.time), 3) for f in source.decode(video=0)]
    with av.open(str(out)) as result:
        frames = [(round(float(f.time), 3), f.to_ndarray(format="rgb24")) for f in result.decode(video=0)]
    assert [t for t, _ in frames] == pytest.approx(source_times, abs=0.002)  # every frame, at its own time
    final = next(e for e in events if e["type"] == "final")
    reader = TextReader(verify_bundle(default_bundle))
    # The caption band at the bottom while the final is on screen, the screen note at the top.
    at = min(frames, key=lambda f: abs(f[0] - (final["end"] + 0.5)))[1]
    bottom = " ".join(line.text for line in reader(at[-70:]))
    assert wer(final["text"], bottom) <= 0.2, (final["text"], bottom)
    notes = visual(events)
    note = notes[0]["text"]
    # The slide's last frame before the next note takes over (the first frames come before any note is out).
    until = notes[1]["start"] if len(notes) > 1 else 2.5
    slide = [image for t, image in frames if t < until - 0.05][-1]
    top = " ".join(line.text for line in reader(slide[:60]))
    assert "[screen]" in top and "Quarterly results" in top, (note, top)
    assert not np.array_equal(slide[100:250], np.zeros_like(slide[100:250]))
    # The sound is there too, in step with the pictures: the captioned file, captioned again, says the same.
    with av.open(str(clip)) as source:
        source_seconds = sum(f.samples / f.sample_rate for f in source.decode(audio=0))
    with av.open(str(out)) as result:
        audio = result.streams.audio[0]
        assert audio.codec_context.name == "aac" and audio.rate == 16000
        seconds = sum(f.samples for f in result.decode(audio=0)) / 16000
    assert seconds == pytest.approx(source_seconds, abs=0.1)
    code, again, err = run_cli(default_bundle, out, "--no-realtime", "--no-visual")
    assert code == 0, err
    finals = [e for e in again if e["type"] == "final"]
    assert wer(final["text"], " ".join(e["text"] for e in finals)) <= 0.2, finals
    assert abs(finals[0]["start"] - final["start"]) < 0.15  # the speech starts where it started in the source


def test_video_sink_bad_targets_are_named(default_bundle: Path, tmp_path: Path) -> None:
    clip = make_scene_clip(tmp_path / "in.mp4", [render_slide("x")], seconds_each=0.5)
    code, _, err = run_cli(default_bundle, clip, "--no-speech", "--sink", f"video:{tmp_path}/missing/out.mp4")
    assert code == 2 and "directory" in err and "missing" in err
    code, _, err = run_cli(default_bundle, clip, "--no-speech", "--sink", f"video:{tmp_path}/out.txt")
    assert code == 2 and "out.txt" in err and ".mp4" in err

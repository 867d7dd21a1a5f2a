"""`--sink video:PATH`: captions and screen notes burned into the frames, checked by reading them back with OCR,
and the sound written beside them, checked by captioning the output again."""

from __future__ import annotations

import asyncio
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np
import pytest
from event_records import event as typed_event
from media_factory import make_scene_clip, make_speech_turns, make_speech_wav, render_photo, render_slide
from video_cli import run_cli, visual

from edgeomni.bundle import verify_bundle
from edgeomni.config import RunConfig
from edgeomni.engines.bundle_engines import Engines
from edgeomni.engines.ocr import TextReader
from edgeomni.errors import SinkError
from edgeomni.events import Event
from edgeomni.frames import VideoFrame
from edgeomni.pipeline import Pipeline
from edgeomni.sinks import Sink, SinkSet
from edgeomni.sinks.overlay import GlyphFont, draw_lines
from edgeomni.sinks.video import BurnedVideoSink, CaptionBoard
from edgeomni.sources import open_source
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
    board.update(typed_event({"type": "visual", "start": 0.0, "end": 1.0, "text": "slide: Intro"}))
    board.update(typed_event({"type": "partial", "start": 1.0, "end": 1.5, "text": "Hello th"}))
    assert board.at(0.5) == ("", "slide: Intro")
    assert board.at(1.6) == ("Hello th", "slide: Intro")
    board.update(typed_event({"type": "final", "start": 1.0, "end": 2.0, "text": "Hello there."}))
    board.update(typed_event({"type": "visual", "start": 3.0, "end": 4.0, "text": "on screen: cat"}))
    assert board.at(1.8) == ("Hello there.", "slide: Intro")
    assert board.at(3.5) == ("Hello there.", "on screen: cat")  # a final is held a while after its speech
    assert board.at(9.0) == ("", "on screen: cat")


@pytest.mark.parametrize("realtime", [False, True])
def test_frames_wait_for_the_settled_marker_unless_the_source_is_real_time(default_bundle: Path, tmp_path: Path,
                                                                          realtime: bool) -> None:
    """The sink itself, driven as the pipeline drives it: 3 s of frames all read at once, a final that comes
    long after the sink's wall-clock hold. Unpaced, the frames wait for the marker and carry the final; real
    time, they leave after delay_s without it (a recording must not fall behind its camera)."""
    bundle = verify_bundle(default_bundle)
    out = tmp_path / "out.mp4"

    async def drive() -> None:
        sink = BurnedVideoSink(str(out), bundle.role_file("overlay-glyphs"), delay_s=0.2)
        sinks = SinkSet([sink])
        now = time.monotonic()
        for i in range(45):
            sinks.push_frame("main", VideoFrame(render_slide("Agenda"), pts=i / 15, arrival=now))
        await sinks.settle("main", 0.0, realtime)
        if realtime:
            # Every frame leaves on time without the marker; the final is published once all are out (a fixed
            # wait would race the writer: one slower to encode 45 frames would draw the final on the last ones).
            deadline = time.monotonic() + 30
            while sink.frames_written < 45 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert sink.frames_written == 45, f"{sink.frames_written} frames out: the rest waited for the marker"
        else:
            await asyncio.sleep(1.0)  # five times the hold
        await sinks.publish(typed_event({"type": "final", "stream": "main", "start": 0.5, "end": 2.9,
                                   "text": "Welcome everyone."}))
        await sinks.settle("main", 3.0, realtime)
        await sinks.close()
        assert sink.frames_written == 45 and sink.error is None

    asyncio.run(drive())
    reader = TextReader(bundle)
    frames = _frames(out)
    assert len(frames) == 45
    for t, image in frames:
        bottom = " ".join(line.text for line in reader(image[-70:]))
        if realtime:
            assert "Welcome" not in bottom, (t, bottom)  # drawn 0.2 s after arrival, before the final was out
        elif 0.6 <= t <= 2.8:
            assert wer("Welcome everyone.", bottom) <= 0.5, (t, bottom)


def test_a_failed_writer_never_holds_up_an_unpaced_source(default_bundle: Path, tmp_path: Path) -> None:
    """The file cannot be opened (its folder went away): the error reaches send(), and push_frame never leaves
    the pipeline waiting on a backlog that a dead writer would never clear."""
    folder = tmp_path / "gone"
    folder.mkdir()
    sink = BurnedVideoSink(str(folder / "out.mp4"), verify_bundle(default_bundle).role_file("overlay-glyphs"))
    folder.rmdir()
    image = np.zeros((64, 64, 3), np.uint8)
    for i in range(700):
        sink.push_frame("main", VideoFrame(image, pts=i / 15, arrival=0.0))
    deadline = time.monotonic() + 30
    while sink.error is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sink.error is not None and not sink.backlogged
    with pytest.raises(SinkError, match=r"out\.mp4"):
        asyncio.run(sink.send(typed_event({"type": "final", "stream": "main", "start": 0.0, "end": 1.0, "text": "x"})))
    asyncio.run(sink.close())


class _SettledLog(Sink):
    name = "settled-log"
    wants_settled = True

    def __init__(self) -> None:
        self.events: list[dict] = []

    async def send(self, event: Event) -> None:
        self.events.append(event.to_dict())


@pytest.mark.slow
def test_no_caption_starts_before_a_settled_marker_that_went_out_ahead_of_it(default_bundle: Path,
                                                                             tmp_path: Path) -> None:
    """The promise the sink relies on, checked on the real pipeline and models reading a file unpaced: a
    settled marker at t means no caption starting before t is still to come (speech and screen notes)."""
    turns = ["The meeting starts now.", "Sales went up this quarter.", "Costs stayed the same."]
    speech = make_speech_turns(tmp_path / "speech.wav", turns)
    clip = make_scene_clip(tmp_path / "in.mp4", [render_slide("Agenda"), render_photo("chelsea")] * 3,
                           seconds_each=2.0, speech=speech, speech_at=0.5)
    engines = Engines.load(verify_bundle(default_bundle), RunConfig())
    log = _SettledLog()

    async def go() -> None:
        with ThreadPoolExecutor(2) as executor:
            sinks = SinkSet([log])
            await Pipeline(open_source(str(clip), realtime=False), engines, sinks, RunConfig(), executor).run()
            await sinks.close()

    asyncio.run(go())
    settled, markers, captions = -math.inf, 0, 0
    for event in log.events:
        if event["type"] == "settled":
            assert event["realtime"] is False and event["media"] >= settled, event
            settled, markers = event["media"], markers + 1
        elif event["type"] in ("partial", "final", "visual"):
            assert event["start"] >= settled - 0.0005, (event, settled)  # events carry milliseconds
            captions += 1
    assert settled == math.inf and markers >= 5, markers
    kinds = {e["type"] for e in log.events}
    assert {"final", "visual"} <= kinds and captions >= 4, kinds


@pytest.mark.slow
def test_burned_in_output_reads_back_as_the_captions(default_bundle: Path, tmp_path: Path) -> None:
    speech = make_speech_wav(tmp_path / "speech.wav", "Thank you for listening.", speed=140)
    clip = make_scene_clip(tmp_path / "in.mp4", [render_slide("Quarterly results"), render_photo("chelsea")],
                           seconds_each=2.5, speech=speech, speech_at=0.5)
    out = tmp_path / "captioned.mp4"
    # Paced as a camera would be: each frame waits for its captions at most 1 s (wall) after it arrives (the
    # unpaced case, which waits for them however long it takes, is the test below).
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
    # One word of the 4 may differ (the sound went through AAC once more); missing or shifted sound fails.
    assert wer(final["text"], " ".join(e["text"] for e in finals)) <= 0.25, finals
    assert abs(finals[0]["start"] - final["start"]) < 0.15  # the speech starts where it started in the source


@pytest.mark.slow
def test_unpaced_file_gets_every_caption_on_the_frames_it_covers(default_bundle: Path, tmp_path: Path) -> None:
    """--no-realtime reads the file as fast as it decodes, far ahead of the heads: each frame is held until the
    pipeline says every caption starting before it is out, so the very first frame carries the slide's note
    and every frame of each utterance its own final, however loaded the machine (no wall-clock guess)."""
    # Turns the model hears confidently through AAC (each final's mean log-prob -0.17 or better, against the -0.8
    # under which a transcript counts as noise), so every one gets its final on any CPU.
    turns = ["Thank you for joining us.", "Please send me the report.", "We hired two engineers.",
             "The new office is open.", "Thank you for listening."]
    speech = make_speech_turns(tmp_path / "speech.wav", turns)
    slides = [render_slide("Quarterly results"), render_photo("chelsea")]
    clip = make_scene_clip(tmp_path / "in.mp4", slides * 4, seconds_each=2.5, speech=speech, speech_at=0.5)
    reader = TextReader(verify_bundle(default_bundle))
    # Speech only: nothing paces the reading (no vision to wait for), so the finals come out seconds of wall
    # time after their frames were read, one decode after another.
    out = tmp_path / "speech.mp4"
    code, events, err = run_cli(default_bundle, clip, "--no-realtime", "--no-visual", "--sink", f"video:{out}")
    assert code == 0, err
    finals = [e for e in events if e["type"] == "final"]
    assert len(finals) >= 4 and wer(" ".join(turns), " ".join(e["text"] for e in finals)) <= 0.5, finals
    frames = _frames(out)
    for final in finals:
        for moment in (final["start"] + 0.1, (final["start"] + final["end"]) / 2, final["end"]):
            image = min(frames, key=lambda f: abs(f[0] - moment))[1]
            bottom = " ".join(line.text for line in reader(image[-70:]))
            assert wer(final["text"], bottom) <= 0.25, (moment, final["text"], bottom)
    # With the screen notes: the first frame already carries the first slide's note.
    out = tmp_path / "notes.mp4"
    code, events, err = run_cli(default_bundle, clip, "--no-realtime", "--no-speech", "--sink", f"video:{out}")
    assert code == 0, err
    note = visual(events)[0]
    assert note["start"] == pytest.approx(0.0, abs=0.05), note
    first = " ".join(line.text for line in reader(_frames(out)[0][1][:60]))
    assert "[screen]" in first and "Quarterly results" in first, (note, first)


def _frames(path: Path) -> list[tuple[float, np.ndarray]]:
    with av.open(str(path)) as result:
        return [(float(f.time), f.to_ndarray(format="rgb24")) for f in result.decode(video=0)]


def test_video_sink_bad_targets_are_named(default_bundle: Path, tmp_path: Path) -> None:
    clip = make_scene_clip(tmp_path / "in.mp4", [render_slide("x")], seconds_each=0.5)
    code, _, err = run_cli(default_bundle, clip, "--no-speech", "--sink", f"video:{tmp_path}/missing/out.mp4")
    assert code == 2 and "directory" in err and "missing" in err
    code, _, err = run_cli(default_bundle, clip, "--no-speech", "--sink", f"video:{tmp_path}/out.txt")
    assert code == 2 and "out.txt" in err and ".mp4" in err

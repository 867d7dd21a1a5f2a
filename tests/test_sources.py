"""The sources stage on generated media: decoding, resampling, ordering, pacing, errors, cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import sys
import threading
import time
import types
from pathlib import Path

import av
import numpy as np
import pytest
from media_factory import (
    make_random_file,
    make_speech_wav,
    make_tone_file,
    make_video_file,
    truncate_file,
)

from edgeomni.errors import SourceError
from edgeomni.frames import AUDIO_RATE, AudioFrame, VideoFrame
from edgeomni.sources import SAMPLE_SPEECH, Source, ensure_sample, list_devices, list_mics, open_source
from edgeomni.sources.sample import sample_info

# -- helpers ---------------------------------------------------------------------------------------


async def _drain(source: Source, limit: int | None = None) -> tuple[list[AudioFrame | VideoFrame], Exception | None]:
    """All frames (or the first ``limit``), and the error the stream ended with, if any."""
    frames: list[AudioFrame | VideoFrame] = []
    try:
        async with contextlib.aclosing(source.frames()) as stream:
            async for frame in stream:
                frames.append(frame)
                if limit is not None and len(frames) >= limit:
                    break
    except SourceError as exc:
        return frames, exc
    finally:
        await source.close()
    return frames, None


def drain(spec: str | Path, limit: int | None = None, **kwargs: object) -> tuple[list, Exception | None]:
    kwargs.setdefault("realtime", False)
    return asyncio.run(_drain(open_source(str(spec), **kwargs), limit))  # type: ignore[arg-type]


def audio_of(frames: list) -> list[AudioFrame]:
    return [f for f in frames if isinstance(f, AudioFrame)]


def video_of(frames: list) -> list[VideoFrame]:
    return [f for f in frames if isinstance(f, VideoFrame)]


def dominant_frequency(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * AUDIO_RATE / len(samples))


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s of 320x240 H.264 at 15 fps with a 440 Hz AAC tone, index first (faststart)."""
    return make_video_file(tmp_path_factory.mktemp("media") / "clip.mp4", seconds=2.0)


# -- opening: what was given, and what is wrong with it ----------------------------------------------


def test_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(SourceError, match=r"nope\.mp4: no such file"):
        open_source(str(missing))


def test_corrupt_file_names_file_and_ffmpeg_reason(tmp_path: Path) -> None:
    corrupt = make_random_file(tmp_path / "corrupt.mp4")
    with pytest.raises(SourceError) as info:
        open_source(str(corrupt))
    message = str(info.value)
    assert "corrupt.mp4" in message
    assert "Invalid data" in message


def test_unknown_kind_lists_accepted_forms() -> None:
    with pytest.raises(SourceError) as info:
        open_source("foo:bar")
    message = str(info.value)
    assert "'foo'" in message and "foo:bar" in message
    for form in ("rtsp://", "http://", "srt://", "lavfi:", "webcam[:N]", "mic[:N]", "sample", "file path"):
        assert form in message, form


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("rtsp:cam", "rtsp URL must look like rtsp://"),
        ("lavfi:", "lavfi needs a filter graph"),
        ("lavfi:nosuchfilter=1", "cannot open lavfi graph"),
        ("", "empty source"),
    ],
)
def test_malformed_specs(spec: str, expected: str) -> None:
    with pytest.raises(SourceError, match=expected):
        open_source(spec)


def test_directory_is_not_media(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="is a directory"):
        open_source(str(tmp_path))


def test_network_error_names_url_without_password() -> None:
    # Port 1 on loopback refuses at once: exercises the network path without a network.
    with pytest.raises(SourceError) as info:
        open_source("rtsp://user:secret@127.0.0.1:1/cam")
    message = str(info.value)
    assert "rtsp://user:***@127.0.0.1:1/cam" in message
    assert "secret" not in message
    assert "refused" in message.lower()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="v4l2 device nodes are Linux-only")
def test_missing_webcam_lists_the_devices_that_exist() -> None:
    with pytest.raises(SourceError) as info:
        open_source("webcam:63")
    message = str(info.value)
    assert "/dev/video63" in message and "webcams found:" in message
    existing = [d.spec for d in list_devices() if d.kind == "webcam"]
    if existing:
        assert all(spec in message for spec in existing)
    else:
        assert "none found" in message


def test_mic_without_pyaudio_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyaudio", None)  # makes `import pyaudio` raise ImportError
    with pytest.raises(SourceError, match=r"PyAudio is not installed.*pip install"):
        open_source("mic")
    assert [d for d in list_devices() if d.kind == "mic"] == []


# -- a fake PyAudio: the mic path end to end, with or without devices ---------------------------------


class _FakeStream:
    def __init__(self, rate: int, channels: int) -> None:
        self.rate, self.channels, self.done = rate, channels, 0
        self.closed = False

    def read(self, n: int, exception_on_overflow: bool = True) -> bytes:
        time.sleep(0.002)
        t = (self.done + np.arange(n)) / self.rate
        self.done += n
        block = np.repeat((0.4 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)[:, None], self.channels, axis=1)
        return block.tobytes()

    def stop_stream(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def _fake_pyaudio(devices: list[dict]) -> types.ModuleType:
    module = types.ModuleType("pyaudio")
    module.paFloat32 = 1  # type: ignore[attr-defined]
    streams: list[_FakeStream] = []

    class PyAudio:
        terminated = False

        def get_device_count(self) -> int:
            return len(devices)

        def get_device_info_by_index(self, i: int) -> dict:
            return devices[i]

        def get_default_input_device_info(self) -> dict:
            if not devices:
                raise OSError("No Default Input Device Available")
            return devices[0]

        def open(self, *, rate: int, channels: int, **_: object) -> _FakeStream:
            streams.append(_FakeStream(rate, channels))
            return streams[-1]

        def terminate(self) -> None:
            PyAudio.terminated = True

    module.PyAudio = PyAudio  # type: ignore[attr-defined]
    module.streams = streams  # type: ignore[attr-defined]
    return module


def test_mic_without_devices_says_none_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyaudio", _fake_pyaudio([]))
    with pytest.raises(SourceError, match="none found"):
        open_source("mic")
    with pytest.raises(SourceError, match="none found"):
        open_source("mic:2")


def test_real_pyaudio_here_reports_missing_mic_cleanly() -> None:
    pytest.importorskip("pyaudio")
    if list_mics():
        pytest.skip("this machine has a microphone")
    with pytest.raises(SourceError, match="none found"):
        open_source("mic")


def test_mic_streams_16k_mono_and_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_pyaudio([{"index": 0, "name": "Fake USB Mic", "maxInputChannels": 2, "defaultSampleRate": 44100.0}])
    monkeypatch.setitem(sys.modules, "pyaudio", fake)
    with pytest.raises(SourceError, match=r"no such microphone; input devices: mic:0 Fake USB Mic"):
        open_source("mic:5")
    assert [str(d).split()[0] for d in list_devices() if d.kind == "mic"] == ["mic:0"]
    baseline = threading.active_count()
    source = open_source("mic:0", realtime=True)
    assert source.live and not source.paced and source.has_audio and not source.has_video
    assert "44100 Hz" in source.describe() and "Fake USB Mic" in source.describe()
    frames, error = asyncio.run(_drain(source, limit=60))  # 60 x 20 ms
    assert error is None
    audio = audio_of(frames)
    samples = np.concatenate([f.samples for f in audio])
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(dominant_frequency(samples) - 1000) < 15
    assert 0.35 < np.abs(samples).max() <= 0.45
    for a, b in itertools.pairwise(audio):
        assert abs(b.pts - a.end) <= 1 / AUDIO_RATE
    assert threading.active_count() == baseline
    assert fake.streams[0].closed and fake.PyAudio.terminated


# -- decoding ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "rate", "layout"),
    [("tone8k.wav", 8_000, "stereo"), ("tone48k.wav", 48_000, "5.1"), ("tone48k.m4a", 48_000, "5.1")],
)
def test_any_rate_and_layout_becomes_16k_mono(tmp_path: Path, name: str, rate: int, layout: str) -> None:
    path = make_tone_file(tmp_path / name, rate=rate, layout=layout, seconds=2.0, freq=1000.0, amplitude=0.5)
    frames, error = drain(path)
    assert error is None
    audio = audio_of(frames)
    assert audio and not video_of(frames)
    samples = np.concatenate([f.samples for f in audio])
    assert all(f.samples.dtype == np.float32 and f.samples.ndim == 1 for f in audio)
    assert abs(len(samples) / AUDIO_RATE - 2.0) <= 0.020
    if name.endswith(".wav"):
        # PCM has no codec padding: every input sample must come out, the resampler's tail included.
        assert abs(len(samples) - 2 * AUDIO_RATE) <= 1
    assert abs(dominant_frequency(samples) - 1000) < 5
    # Same tone in every channel: a downmix must neither vanish nor clip (libswresample's default
    # matrix would give ~1.7 for 5.1; lossy AAC may overshoot a little).
    peak, rms = float(np.abs(samples).max()), float(np.sqrt(np.mean(samples**2)))
    assert np.abs(samples).max() <= 1.0
    tolerance = 0.2 if name.endswith(".m4a") else 0.02
    assert 0.5 - tolerance <= peak <= 0.5 + tolerance
    assert abs(rms - 0.5 / np.sqrt(2)) < 0.05


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_speech_wav_from_espeak(tmp_path: Path) -> None:
    path = make_speech_wav(tmp_path / "hello.wav", "Hello from the edge.")
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        seconds = sum(f.samples for f in c.decode(stream)) / stream.rate
    frames, error = drain(path)
    assert error is None
    samples = np.concatenate([f.samples for f in audio_of(frames)])
    assert abs(len(samples) / AUDIO_RATE - seconds) < 0.002
    assert 0.05 < float(np.abs(samples).max()) <= 1.0


def test_lavfi_audio_source() -> None:
    frames, error = drain("lavfi:sine=frequency=440:duration=1")
    assert error is None
    samples = np.concatenate([f.samples for f in audio_of(frames)])
    assert abs(len(samples) / AUDIO_RATE - 1.0) <= 0.005
    assert abs(dominant_frequency(samples) - 440) < 5


def test_lavfi_audio_and_video() -> None:
    frames, error = drain("lavfi:testsrc=size=160x120:rate=10:duration=1[out0];sine=frequency=300:duration=1[out1]")
    assert error is None
    assert len(video_of(frames)) == 10 and video_of(frames)[0].image.shape == (120, 160, 3)
    assert abs(sum(f.duration for f in audio_of(frames)) - 1.0) < 0.005


def test_frames_in_pts_order_and_audio_contiguous(clip: Path) -> None:
    source = open_source(str(clip), realtime=False)
    assert source.has_audio and source.has_video and not source.live
    assert source.describe() == "audio aac 48000 Hz mono; video h264 320x240 15 fps"
    frames, error = asyncio.run(_drain(source))
    assert error is None
    pts = [f.pts for f in frames]
    assert pts == sorted(pts)
    audio, video = audio_of(frames), video_of(frames)
    assert audio[0].pts == 0.0 and video[0].pts == 0.0
    for a, b in itertools.pairwise(audio):
        assert abs(b.pts - a.end) <= 1 / AUDIO_RATE
    assert abs(audio[-1].end - 2.0) < 0.03  # AAC pads its last frame by up to 1024 samples
    assert [f.index for f in video] == list(range(30))
    assert np.allclose([f.pts for f in video], np.arange(30) / 15, atol=1e-3)
    image = video[0].image
    assert image.shape == (240, 320, 3) and image.dtype == np.uint8
    # The moving square: its column moves right from frame to frame.
    def square_column(image: np.ndarray) -> int:
        row = image[100].astype(int)  # the square is yellow on a grey gradient: red far above blue
        return int(np.argmax(row[:, 0] - row[:, 2] > 150))

    cols = [square_column(f.image) for f in (video[0], video[15], video[29])]
    assert cols[0] < cols[1] < cols[2] and cols[2] > 200


def test_video_size_scales_in_the_decoder(clip: Path) -> None:
    frames, _ = drain(clip, limit=20, video_size=(160, 90))
    assert {f.image.shape for f in video_of(frames)} == {(90, 160, 3)}


def test_video_only_file(tmp_path: Path) -> None:
    path = make_video_file(tmp_path / "silent.mp4", seconds=1.0, with_audio=False)
    with pytest.raises(SourceError, match=r"silent\.mp4 has no audio stream \(found: video h264 320x240 15 fps\)"):
        open_source(str(path), require_audio=True)
    frames, error = drain(path, require_audio=False)
    assert error is None and len(frames) == 15 and not audio_of(frames)


def test_file_with_neither_audio_nor_video(tmp_path: Path) -> None:
    path = tmp_path / "subs.srt"  # FFmpeg demuxes SubRip: a container with one subtitle stream
    path.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n\n")
    with pytest.raises(SourceError, match=r"subs\.srt has no audio or video stream \(found: subtitle "):
        open_source(str(path))


# -- damaged files ---------------------------------------------------------------------------------


def test_truncated_mp4_delivers_what_decodes_then_names_the_damage(clip: Path, tmp_path: Path) -> None:
    half = truncate_file(clip, tmp_path / "half.mp4", 0.5)
    frames, error = drain(half)
    audio, video = audio_of(frames), video_of(frames)
    assert audio and video, "frames decoded before the damage must be delivered"
    assert [f.pts for f in frames] == sorted(f.pts for f in frames)
    assert isinstance(error, SourceError)
    message = str(error)
    assert "half.mp4" in message and "truncated" in message
    reached = float(message.split("decoded up to ")[1].split(" s")[0])
    assert abs(reached - max(audio[-1].end, video[-1].pts)) < 0.01
    assert 0.3 < reached < 1.8
    assert "of 2.0" in message  # the duration the file declares


def test_truncated_mp4_without_index_cannot_open(tmp_path: Path) -> None:
    whole = make_video_file(tmp_path / "rec.mp4", seconds=1.0, faststart=False)
    half = truncate_file(whole, tmp_path / "rec_half.mp4", 0.5)
    with pytest.raises(SourceError, match=r"rec_half\.mp4: cannot open file: .*moov atom not found"):
        open_source(str(half))


def test_truncated_wav_ends_cleanly_with_the_first_half(tmp_path: Path) -> None:
    whole = make_tone_file(tmp_path / "tone.wav", rate=48_000, layout="stereo", seconds=2.0)
    half = truncate_file(whole, tmp_path / "tone_half.wav", 0.5)
    frames, error = drain(half)
    assert error is None
    assert abs(sum(f.duration for f in frames) - 1.0) < 0.02


# -- pacing, concurrency, cleanup --------------------------------------------------------------------


def test_realtime_pacing_tracks_pts(tmp_path: Path) -> None:
    path = make_video_file(tmp_path / "short.mp4", seconds=1.5)
    source = open_source(str(path), realtime=True)
    began = time.monotonic()
    frames, error = asyncio.run(_drain(source))
    paced_wall = time.monotonic() - began
    assert error is None
    assert paced_wall >= 1.4
    assert source.started_monotonic is not None and source.started_wall is not None
    lag = [f.arrival - source.started_monotonic - f.pts for f in frames]
    assert max(abs(x) for x in lag) <= 0.05

    began = time.monotonic()
    fast, _ = drain(path, realtime=False)
    fast_wall = time.monotonic() - began
    assert len(fast) == len(frames)
    # Unpaced decoding took 0.05 s of the paced 1.5 s here; half the paced time is a bound no CPU misses, and a
    # source that paced anyway (at least 1.43 s: the last frame's pts) is still far past it.
    assert fast_wall < paced_wall / 2


def test_closing_mid_stream_stops_the_worker(clip: Path) -> None:
    baseline = threading.active_count()

    async def read_a_few_then_break() -> None:
        source = open_source(str(clip), realtime=True)
        stream = source.frames()
        async for frame in stream:
            if frame.pts > 0.2:
                break
        await stream.aclose()
        assert threading.active_count() == baseline

    async def cancel_the_consumer() -> None:
        source = open_source(str(clip), realtime=True)

        async def consume() -> None:
            async for _ in source.frames():
                pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.3)
        assert threading.active_count() == baseline + 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert threading.active_count() == baseline

    async def close_from_another_task() -> None:
        source = open_source(str(clip), realtime=True)
        got: list = []

        async def consume() -> None:
            async for frame in source.frames():
                got.append(frame)

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.3)
        await source.close()
        await asyncio.wait_for(task, 2.0)  # the consumer ends instead of waiting for ever
        assert got and threading.active_count() == baseline

    asyncio.run(read_a_few_then_break())
    asyncio.run(cancel_the_consumer())
    asyncio.run(close_from_another_task())


def test_frames_is_single_use(clip: Path) -> None:
    async def twice() -> None:
        source = open_source(str(clip), realtime=False)
        await _drain(source, limit=3)
        with pytest.raises(SourceError, match="already iterated"):
            async for _ in source.frames():
                pass

    asyncio.run(twice())


# -- the demo clip -----------------------------------------------------------------------------------


def _wav_seconds(path: Path) -> float:
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        return sum(f.samples for f in c.decode(stream)) / stream.rate


def test_sample_clip_is_built_once_and_matches_its_timeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.metadata

    media = tmp_path / "media"  # where $EDGEOMNI_CACHE=tmp_path puts it, for the `sample` spec below
    messages: list[str] = []
    clip = ensure_sample(media, progress=messages.append)
    assert clip == media / "sample.mp4" and clip.is_file()
    assert any("encoded" in m for m in messages) and "wrote" in messages[-1]
    assert not list(media.glob(".*tmp*")), "temporary files must be renamed or removed"

    assets = Path(str(importlib.metadata.distribution("moonshine-voice").locate_file("moonshine_voice/assets")))
    expected = 1.0 + _wav_seconds(assets / "two_cities.wav") + 1.5 + _wav_seconds(assets / "beckett.wav") + 1.0
    with av.open(str(clip)) as c:
        assert {s.type for s in c.streams} == {"audio", "video"}
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height, int(v.average_rate)) == (640, 360, 15)
        audio_seconds = sum(f.samples for f in c.decode(c.streams.audio[0])) / c.streams.audio[0].rate
    assert abs(audio_seconds - expected) < 0.05

    info = sample_info(media)
    assert [(s["id"], s["text"]) for s in info["speech"]] == SAMPLE_SPEECH
    slides = info["slides"]
    assert slides[0]["start"] == 0 and abs(slides[-1]["end"] - info["duration"]) < 0.1
    assert all(a["end"] == b["start"] for a, b in itertools.pairwise(slides))
    assert {s["photo"] for s in slides if s["kind"] == "photo"} == {"astronaut", "chelsea", "coffee", "rocket"}
    assert all(s["end"] - s["start"] >= 3 for s in slides)
    assert json.loads((media / "sample.json").read_text())["version"] == info["version"]

    # Reused, not rebuilt.
    mtime = clip.stat().st_mtime_ns
    again: list[str] = []
    assert ensure_sample(media, progress=again.append) == clip
    assert again == [] and clip.stat().st_mtime_ns == mtime

    # `sample` as a source spec resolves to the clip in the media cache.
    monkeypatch.setenv("EDGEOMNI_CACHE", str(tmp_path))
    frames, error = drain("sample", limit=40, video_size=(320, 180))
    assert error is None
    assert audio_of(frames) and video_of(frames)[0].image.shape == (180, 320, 3)


def test_sample_without_moonshine_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    def missing(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(SourceError, match=r"pip install --no-deps moonshine-voice==0\.1\.0"):
        ensure_sample(tmp_path, progress=lambda _: None)
    assert not (tmp_path / "sample.mp4").exists()

"""The demo clip behind `--source sample`: real read speech over a slideshow of photos and text.

Built once into the media cache (sample.mp4 + sample.json), from files that ship inside registry
packages, so it needs no network: speech from moonshine-voice's assets, photographs from
scikit-image, text rendered with Pillow's built-in font. skimage and Pillow are imported only
here, only while building: they are not runtime dependencies.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np

from edgeomni.errors import SourceError
from edgeomni.paths import media_dir

SAMPLE_VERSION = 1  # bump when the clip's content changes: a cached clip of another version is rebuilt
WIDTH, HEIGHT, FPS = 640, 360, 15
AUDIO_RATE = 48_000
MOONSHINE_HINT = "run the set-up (make setup) or: pip install --no-deps moonshine-voice==0.1.0"

TWO_CITIES_TEXT = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, "
    "it was the season of Darkness, it was the spring of hope, it was the winter of despair, we had "
    "everything before us, we had nothing before us, we were all going direct to Heaven, we were all going "
    "direct the other way - in short, the period was so far like the present period, that some of its "
    "noisiest authorities insisted on its being received, for good or for evil, in the superlative degree "
    "of comparison only."
)
BECKETT_TEXT = "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better."

SAMPLE_SPEECH: list[tuple[str, str]] = [("two_cities", TWO_CITIES_TEXT), ("beckett", BECKETT_TEXT)]
"""(speech id, reference text) in the order spoken in the clip; ids match sample.json's "speech"."""

# The clip's audio: lead silence, two_cities, gap, beckett, tail silence (seconds).
_LEAD_S, _GAP_S, _TAIL_S = 1.0, 1.5, 1.0
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")

Progress = Callable[[str], Any]


def ensure_sample(directory: Path | None = None, *, progress: Progress = print) -> Path:
    """Path of sample.mp4 in ``directory`` (default: the media cache), building it on first use."""
    directory = Path(directory) if directory is not None else media_dir()
    clip, info = directory / "sample.mp4", directory / "sample.json"
    if clip.is_file() and info.is_file():
        try:
            if json.loads(info.read_text()).get("version") == SAMPLE_VERSION:
                return clip
        except (OSError, ValueError):
            pass  # unreadable metadata: rebuild both
    directory.mkdir(parents=True, exist_ok=True)
    build_sample(clip, progress=progress)
    return clip


def sample_info(directory: Path | None = None) -> dict[str, Any]:
    """The timeline written beside the clip: slides (start, end, content) and speech (start, end, text)."""
    directory = Path(directory) if directory is not None else media_dir()
    return json.loads((directory / "sample.json").read_text())


def speech_asset(name: str) -> Path:
    """A wav inside the moonshine-voice package, found without importing it (its import loads a C library)."""
    try:
        dist = importlib.metadata.distribution("moonshine-voice")
    except importlib.metadata.PackageNotFoundError as exc:
        raise SourceError(f"the sample clip's speech comes from the moonshine-voice package; {MOONSHINE_HINT}") from exc
    path = Path(str(dist.locate_file(f"moonshine_voice/assets/{name}")))
    if not path.is_file():
        raise SourceError(f"{path}: missing from the installed moonshine-voice (0.1.0 ships it); {MOONSHINE_HINT}")
    return path


def build_sample(clip: Path, *, progress: Progress = print) -> dict[str, Any]:
    """Encode the clip to ``clip`` and its timeline to ``clip`` with .json; both written atomically."""
    began = time.monotonic()
    progress(f"sample: building the demo clip {clip} (once; takes a few seconds)")
    audio, speech = _soundtrack()
    duration = len(audio) / AUDIO_RATE
    slides = _timeline(speech, duration)
    info = {
        "version": SAMPLE_VERSION,
        "file": clip.name,
        "duration": round(duration, 4),
        "video": {"width": WIDTH, "height": HEIGHT, "fps": FPS},
        "audio": {"rate": AUDIO_RATE, "channels": 1, "codec": "aac"},
        "speech": speech,
        "slides": slides,
    }
    images = [_render(slide) for slide in slides]
    tmp = clip.with_name(f".{clip.stem}.{os.getpid()}.tmp.mp4")
    try:
        info["video"]["codec"] = _encode(tmp, audio, slides, images, progress)
        os.replace(tmp, clip)
    finally:
        tmp.unlink(missing_ok=True)
    tmp_info = clip.with_name(f".{clip.stem}.{os.getpid()}.tmp.json")
    tmp_info.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp_info, clip.with_suffix(".json"))
    size = clip.stat().st_size / 1e6
    progress(f"sample: wrote {clip} ({duration:.1f} s, {size:.1f} MB) in {time.monotonic() - began:.1f} s")
    return info


def _soundtrack() -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The clip's mono 48 kHz audio and where each speech passage lies in it."""
    texts = dict(SAMPLE_SPEECH)
    parts = [np.zeros(round(_LEAD_S * AUDIO_RATE), np.float32)]
    speech, position = [], len(parts[0])
    for name, gap in (("two_cities", _GAP_S), ("beckett", _TAIL_S)):
        samples = _read_audio(speech_asset(f"{name}.wav"))
        speech.append({
            "id": name,
            "start": round(position / AUDIO_RATE, 4),
            "end": round((position + len(samples)) / AUDIO_RATE, 4),
            "text": texts[name],
            "wav": f"moonshine_voice/assets/{name}.wav",
        })
        silence = np.zeros(round(gap * AUDIO_RATE), np.float32)
        parts += [samples, silence]
        position += len(samples) + len(silence)
    return np.concatenate(parts), speech


def _read_audio(path: Path) -> np.ndarray:
    resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
    with av.open(str(path)) as container:
        frames = [f for frame in container.decode(audio=0) for f in resampler.resample(frame)]
    frames += resampler.resample(None)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32)


def _timeline(speech: list[dict[str, Any]], duration: float) -> list[dict[str, Any]]:
    """Slides in step with the speech: title, Dickens title card, four photos during the reading,
    then the Beckett quote. Boundaries fall on frame times."""
    dickens, beckett = speech
    photo_start, photo_end = 11.0, (dickens["end"] + beckett["start"]) / 2
    step = (photo_end - photo_start) / len(PHOTOS)
    cuts = [0.0, 5.0] + [photo_start + i * step for i in range(len(PHOTOS) + 1)] + [duration]
    cuts = [round(c * FPS) / FPS for c in cuts]
    contents: list[dict[str, Any]] = [
        {"kind": "text", "text": "EdgeOmni live captions", "subtitle": "speech, photographs and text on screen"},
        {"kind": "text", "text": "A Tale of Two Cities", "subtitle": "Charles Dickens, 1859"},
        *({"kind": "photo", "photo": name, "text": ""} for name in PHOTOS),
        {"kind": "text", "text": "Fail better", "subtitle": "Samuel Beckett"},
    ]
    spans = zip(cuts[:-1], cuts[1:], contents, strict=True)
    return [{"start": round(a, 4), "end": round(b, 4), **c} for a, b, c in spans]


def _render(slide: dict[str, Any]) -> np.ndarray:
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError as exc:
        raise SourceError("building the sample clip needs Pillow: pip install 'pillow>=10.1'") from exc
    canvas = Image.new("RGB", (WIDTH, HEIGHT), (0, 0, 0))
    if slide["kind"] == "photo":
        try:
            import skimage.data
        except ImportError as exc:
            raise SourceError("building the sample clip needs scikit-image: pip install scikit-image") from exc
        photo = Image.fromarray(getattr(skimage.data, slide["photo"])()).convert("RGB")
        scale = min(WIDTH / photo.width, HEIGHT / photo.height)  # letterbox: whole photo, aspect kept
        photo = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.Resampling.LANCZOS)
        canvas.paste(photo, ((WIDTH - photo.width) // 2, (HEIGHT - photo.height) // 2))
        return np.asarray(canvas)
    canvas.paste((18, 28, 56), (0, 0, WIDTH, HEIGHT))
    draw = ImageDraw.Draw(canvas)
    for size in range(64, 15, -4):  # the largest size at which the title fits the width
        font = ImageFont.load_default(size=size)
        if draw.textlength(slide["text"], font=font) <= 0.9 * WIDTH:
            break
    draw.text((WIDTH / 2, HEIGHT * 0.44), slide["text"], font=font, fill=(255, 255, 255), anchor="mm")
    if slide.get("subtitle"):
        sub = ImageFont.load_default(size=26)
        draw.text((WIDTH / 2, HEIGHT * 0.64), slide["subtitle"], font=sub, fill=(190, 200, 225), anchor="mm")
    return np.asarray(canvas)


def _encode(path: Path, audio: np.ndarray, slides: list[dict[str, Any]], images: list[np.ndarray],
            progress: Progress) -> str:
    """Mux H.264 (mpeg4 where libx264 is missing) + AAC, interleaved in time order; returns the video codec."""
    n_frames = math.ceil(len(audio) / AUDIO_RATE * FPS)
    # faststart puts the index first, so a partial copy of the clip still opens and plays.
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        try:
            video = out.add_stream("libx264", rate=FPS, options={"preset": "veryfast", "crf": "23"})
        except (av.FFmpegError, ValueError):
            video = out.add_stream("mpeg4", rate=FPS, options={"qscale": "4"})
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.codec_context.gop_size = 2 * FPS  # a keyframe every 2 s: quick start when seeking
        sound = out.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        sound.bit_rate = 96_000
        per_frame = sound.codec_context.frame_size or 1024
        sent = 0
        slide_of = np.searchsorted([s["start"] for s in slides], (np.arange(n_frames) + 0.5) / FPS) - 1
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(images[slide_of[i]], format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
            until = min(len(audio), round((i + 1) / FPS * AUDIO_RATE))
            while sent < until:
                # Full encoder frames (may run a few ms ahead of the video); only the last is short.
                chunk = audio[sent:sent + per_frame]
                aframe = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="fltp", layout="mono")
                aframe.sample_rate, aframe.pts = AUDIO_RATE, sent
                out.mux(sound.encode(aframe))
                sent += len(chunk)
            if i % (n_frames // 10 or 1) == 0 and i:
                progress(f"sample: encoded {i / FPS:.0f} of {n_frames / FPS:.0f} s")
        out.mux(video.encode(None))
        out.mux(sound.encode(None))
        return {"libx264": "h264"}.get(video.codec_context.name, video.codec_context.name)

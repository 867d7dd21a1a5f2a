"""Generated video for `edgeomni bench video` and the tests: real photos, slides with known text, speech.

scikit-image photos and Pillow text are imported inside the functions (bench/export-time only; the
runtime never imports this module).
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

SCENE_PHOTOS = {"astronaut": "portrait (one face)", "chelsea": "a cat, no face", "coffee": "a cup, no face"}


def render_photo(name: str, size: tuple[int, int] = (640, 360)) -> np.ndarray:
    """A scikit-image photo letterboxed (aspect kept) onto a black frame of ``size``."""
    import skimage.data

    return letterbox(getattr(skimage.data, name)(), size)


def letterbox(photo: np.ndarray, size: tuple[int, int] = (640, 360),
              fill: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """An RGB photo scaled (aspect kept, Lanczos) to fit ``size`` and centred on a frame of ``fill``."""
    from PIL import Image

    width, height = size
    image = Image.fromarray(photo).convert("RGB")
    scale = min(width / image.width, height / image.height)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", size, fill)
    canvas.paste(image, ((width - image.width) // 2, (height - image.height) // 2))
    return np.asarray(canvas)


def render_slide(title: str, subtitle: str = "", size: tuple[int, int] = (640, 360)) -> np.ndarray:
    """A presentation slide: white title and a lighter subtitle on dark blue, sizes relative to the frame."""
    from PIL import Image, ImageDraw, ImageFont

    width, height = size
    canvas = Image.new("RGB", size, (18, 28, 56))
    draw = ImageDraw.Draw(canvas)
    draw.text((width / 2, height * 0.42), title, font=ImageFont.load_default(size=round(height * 0.13)),
              fill=(255, 255, 255), anchor="mm")
    if subtitle:
        draw.text((width / 2, height * 0.62), subtitle, font=ImageFont.load_default(size=round(height * 0.075)),
                  fill=(190, 200, 225), anchor="mm")
    return np.asarray(canvas)


def make_scene_clip(path: Path, scenes: list[np.ndarray], seconds_each: float = 3.0, fps: int = 15,
                    speech: Path | None = None, speech_at: float = 1.0, audio_rate: int = 48_000,
                    pix_fmt: str = "yuv420p", vfr: bool = False,
                    animate: Callable[[np.ndarray, int], np.ndarray] | None = None, preset: str = "ultrafast") -> Path:
    """An H.264 clip holding each image for ``seconds_each``; optional speech wav as the AAC audio track,
    starting ``speech_at`` seconds in (someone starts talking after the recording starts).

    vfr=True varies the frame spacing (alternately 1/fps and 2/fps apart, as a phone camera does),
    with a 1/1000 s time base so the timestamps are exact. animate(image, frame_index) may alter each frame
    (a talking head's moving mouth).
    """
    path = Path(path)
    height, width = scenes[0].shape[:2]
    audio = None
    if speech is not None:
        audio = np.concatenate([np.zeros(round(speech_at * audio_rate), np.float32), _read_mono(speech, audio_rate)])
        audio = audio[:round(seconds_each * len(scenes) * audio_rate)]  # no audio past the last frame
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as out:
        video = out.add_stream("libx264", rate=fps, options={"preset": preset, "crf": "20"})
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        if vfr:
            video.codec_context.time_base = Fraction(1, 1000)
        astream = out.add_stream("aac", rate=audio_rate, layout="mono") if audio is not None else None
        total, t, index, sent = seconds_each * len(scenes), 0.0, 0, 0
        frame_size = (astream.codec_context.frame_size if astream is not None else 0) or 1024
        while t < total - 1e-9:
            image = scenes[min(len(scenes) - 1, int(t / seconds_each))]
            if animate is not None:
                image = animate(image, index)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = round(t * 1000) if vfr else index
            if vfr:
                frame.time_base = Fraction(1, 1000)
            out.mux(video.encode(frame))
            index += 1
            t = index / fps if not vfr else t + (1 if index % 2 else 2) / fps
            until = len(audio) if audio is not None and t >= total else round(min(t, total) * audio_rate)
            while astream is not None and audio is not None and sent < min(until, len(audio)):
                chunk = audio[sent:sent + frame_size]
                aframe = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="fltp", layout="mono")
                aframe.sample_rate, aframe.pts = audio_rate, sent
                out.mux(astream.encode(aframe))
                sent += len(chunk)
        out.mux(video.encode(None))
        if astream is not None:
            out.mux(astream.encode(None))
    return path


def _read_mono(path: Path, rate: int) -> np.ndarray:
    """A wav (any rate) as float32 mono at ``rate``."""
    resampler = av.AudioResampler(format="fltp", layout="mono", rate=rate)
    chunks = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(chunks).astype(np.float32)



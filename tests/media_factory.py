"""Generated test media: tones, speech, video clips and broken files, made with PyAV and espeak-ng.

Every function writes to the path it is given and returns it, so tests can build what they need
in tmp_path; nothing is downloaded.
"""

from __future__ import annotations

import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from edgeomni.bench.video_media import make_scene_clip as make_scene_clip
from edgeomni.bench.video_media import render_photo as render_photo
from edgeomni.bench.video_media import render_slide as render_slide

_AUDIO_CODECS = {".wav": "pcm_s16le", ".flac": "flac", ".m4a": "aac", ".mp4": "aac", ".mkv": "aac", ".ogg": "libvorbis"}


def tone(seconds: float, rate: int, freq: float = 1000.0, amplitude: float = 0.5) -> np.ndarray:
    """A float32 sine wave of ``seconds`` at ``rate``."""
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def make_tone_file(
    path: Path,
    rate: int = 16_000,
    layout: str = "mono",
    seconds: float = 2.0,
    freq: float = 1000.0,
    amplitude: float = 0.5,
) -> Path:
    """An audio-only file with the same tone in every channel of ``layout`` ('mono', 'stereo', '5.1', ...).

    The codec follows the suffix: .wav PCM 16-bit, .flac, .m4a/.mp4/.mkv AAC, .ogg Vorbis.
    """
    path = Path(path)
    codec = _AUDIO_CODECS[path.suffix.lower()]
    signal = tone(seconds, rate, freq, amplitude)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        channels = stream.codec_context.layout.nb_channels
        frame_size = stream.codec_context.frame_size or 1024
        for start in range(0, len(signal), frame_size):
            chunk = signal[start:start + frame_size]
            planes = np.ascontiguousarray(np.broadcast_to(chunk, (channels, len(chunk))))
            frame = av.AudioFrame.from_ndarray(planes, format="fltp", layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def make_speech_wav(path: Path, text: str, voice: str = "en", speed: int = 160) -> Path:
    """Synthesize ``text`` with espeak-ng (22.05 kHz mono wav) - speech whose transcript is known exactly."""
    return _espeak(path, [text], speed, voice)


def make_speech_turns(path: Path, sentences: list[str], pause_ms: int = 1200, speed: int = 150) -> Path:
    """Several sentences with ``pause_ms`` of silence between them (SSML breaks): one utterance each."""
    ssml = "<speak>" + f'<break time="{pause_ms}ms"/>'.join(sentences) + "</speak>"
    return _espeak(path, ["-m", ssml], speed)


def _espeak(path: Path, args: list[str], speed: int, voice: str = "en") -> Path:
    exe = shutil.which("espeak-ng") or shutil.which("espeak")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
    subprocess.run([exe, "-v", voice, "-s", str(speed), "-w", str(path), *args], check=True, capture_output=True)
    return Path(path)


def make_video_file(
    path: Path,
    seconds: float = 2.0,
    size: tuple[int, int] = (320, 240),
    fps: int = 15,
    with_audio: bool = True,
    freq: float = 440.0,
    audio_rate: int = 48_000,
    faststart: bool = True,
) -> Path:
    """An H.264 (or MPEG-4 Part 2) + AAC clip: a bright square moving left to right on a gradient,
    and a sine tone. Frame i is distinguishable: the square's x position is proportional to i.

    faststart puts the mp4 index first (what a player needs to play a partial file); without it
    a truncated copy cannot be opened at all.
    """
    path = Path(path)
    width, height = size
    n_frames = round(seconds * fps)
    options = {"movflags": "+faststart"} if faststart and path.suffix.lower() in (".mp4", ".mov") else {}
    with av.open(str(path), "w", options=options) as out:
        try:
            video = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        except (av.FFmpegError, ValueError):
            video = out.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = out.add_stream("aac", rate=audio_rate, layout="mono") if with_audio else None
        signal = tone(seconds, audio_rate, freq, 0.3)
        frame_size = (audio.codec_context.frame_size if audio is not None else 0) or 1024
        sent = 0
        gradient = np.linspace(0, 160, width, dtype=np.uint8)[None, :, None]
        for i in range(n_frames):
            image = np.broadcast_to(gradient, (height, width, 3)).copy()
            x = int((width - height // 4) * i / max(1, n_frames - 1))
            image[height // 3: height // 3 + height // 4, x: x + height // 4] = (255, 220, 40)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
            # Interleave as a recorder would: audio up to the end of this video frame (all of it after the last).
            until = len(signal) if i == n_frames - 1 else min(len(signal), round((i + 1) / fps * audio_rate))
            while audio is not None and sent < until:
                chunk = signal[sent:sent + frame_size]
                aframe = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="fltp", layout="mono")
                aframe.sample_rate, aframe.pts = audio_rate, sent
                out.mux(audio.encode(aframe))
                sent += len(chunk)
        out.mux(video.encode(None))
        if audio is not None:
            out.mux(audio.encode(None))
    return path


def make_random_file(path: Path, nbytes: int = 64_000, seed: int = 0) -> Path:
    """Random bytes (under whatever name the test wants, e.g. corrupt.mp4)."""
    Path(path).write_bytes(np.random.default_rng(seed).bytes(nbytes))
    return Path(path)


def truncate_file(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    """A copy of ``src`` cut after ``fraction`` of its bytes - a download or recording that stopped."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * fraction)])
    return Path(dst)


# --- video path: scenes of real photos and slides with known text, with speech -------------
# render_photo, render_slide and make_scene_clip live in the package (edgeomni.bench.video_media, imported
# above): `edgeomni bench video` builds its clips with the very same code.


def set_rotation(src: Path, dst: Path, degrees: int) -> Path:
    """A stream copy of ``src`` whose display matrix says 'rotate by degrees' (what phones record)."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise RuntimeError("ffmpeg is not installed (apt-get install ffmpeg)")
    subprocess.run([exe, "-y", "-v", "error", "-i", str(src), "-c", "copy", "-metadata:s:v:0", f"rotate={degrees}",
                    str(dst)], check=True, capture_output=True)
    return Path(dst)


def make_clip_with_corrupt_frame(path: Path, scenes: list[np.ndarray], bad_frame: int, seconds_each: float = 2.0,
                                 fps: int = 15, codec: str = "mjpeg") -> Path:
    """A video-only clip (.mkv) whose packet number ``bad_frame`` is replaced by random bytes of the same size:
    one frame the decoder must reject, with good frames before and after it."""
    path = Path(path)
    height, width = scenes[0].shape[:2]
    rng = np.random.default_rng(bad_frame)
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=fps)
        video.width, video.height = width, height
        video.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        count = round(seconds_each * len(scenes) * fps)
        for i in range(count):
            frame = av.VideoFrame.from_ndarray(scenes[min(len(scenes) - 1, int(i / fps / seconds_each))],
                                               format="rgb24")
            frame.pts = i
            for packet in video.encode(frame):
                if i == bad_frame:
                    garbage = av.Packet(rng.bytes(packet.size))
                    garbage.pts, garbage.dts, garbage.time_base, garbage.stream = (packet.pts, packet.dts,
                                                                                   packet.time_base, video)
                    packet = garbage
                out.mux(packet)
        out.mux(video.encode(None))
    return path

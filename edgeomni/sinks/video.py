"""`--sink video:out.mp4`: the stream's frames with the captions and screen notes burned in (H.264, PyAV).

Frames reach this sink straight from the pipeline (``push_frame``, video and audio), captions through
``send`` like any sink. A caption is emitted a little after the speech it reflects, so each frame is held
until every caption covering its media time is out: the pipeline sends a "settled" marker (behind the
captions, in order) saying up to which media time that holds. A real-time source's frame waits at most
``delay_s`` of wall time for it (a camera's recording must not fall ever further behind); a file read as
fast as possible (``--no-realtime``) waits for the marker alone, so its captions land on the right frames
however loaded the machine is. Frame and text leave in step (the design's parallel text + image outputs).
Drawing and encoding run in a writer thread; the event loop only enqueues. Frames keep their own timestamps
(VFR-safe), at the analysis resolution (visual.frame_width). The audio the runtime heard (16 kHz mono) is
written beside them as AAC, so the captioned file plays with its sound. The file's streams are fixed when it
is opened, so it opens at the first video frame once audio has been seen too, or after
``_AUDIO_WAIT_S`` of video without any (a silent source, or `--no-speech` with a source whose audio is
not decoded): until then frames wait in the writer.
"""

from __future__ import annotations

import asyncio
import math
import queue
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from edgeomni.errors import SinkError
from edgeomni.events import CaptionEvent, Event, FinalEvent, PartialEvent, Settled, VisualEvent
from edgeomni.frames import AUDIO_RATE, AudioFrame, VideoFrame
from edgeomni.sinks.base import Sink
from edgeomni.sinks.overlay import GlyphFont, draw_lines

_HOLD_FINAL_S = 2.0  # a final stays on screen this long after its speech ended
_QUEUE_FRAMES = 600  # ~20 s at 30 fps: the writer only falls this far behind on a badly overloaded machine
# Frames held for their captions: more than the longest utterance (12 s) and its endpoint at 30 fps. Past it a
# frame is drawn with what is known (a partial), and an unpaced source waits (backlogged) a little later.
_HOLD_FRAMES = 450
_BACKLOG_FRAMES = 500
_AUDIO_WAIT_S = 2.0  # media seconds of video after which a source that sent no audio is written without it


@dataclass(slots=True)
class _Cue:
    start: float
    end: float
    text: str


class CaptionBoard:
    """What to show at a media time: the caption covering it (final, else the live partial) and the screen note."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._finals: list[_Cue] = []
        self._partial: _Cue | None = None
        self._notes: list[_Cue] = []

    def update(self, event: CaptionEvent) -> None:
        cue = _Cue(event.start, event.end, event.text)
        with self._lock:
            if isinstance(event, FinalEvent):
                self._finals.append(cue)
                self._partial = None
            elif isinstance(event, PartialEvent):
                self._partial = cue
            elif isinstance(event, VisualEvent):
                self._notes.append(cue)

    def at(self, pts: float) -> tuple[str, str]:
        with self._lock:
            covering = [c for c in self._finals if c.start <= pts <= c.end + _HOLD_FINAL_S]
            caption = covering[-1].text if covering else ""
            if not caption and self._partial is not None and self._partial.start <= pts:
                caption = self._partial.text
            notes = [n for n in self._notes if n.start <= pts]
            note = notes[-1].text if notes else ""
            # Old cues can go: frames are written in pts order.
            self._finals = [c for c in self._finals if c.end + _HOLD_FINAL_S >= pts - 1.0]
        return caption, note


class BurnedVideoSink(Sink):
    wants_settled = True

    def __init__(self, path: str, glyphs: Path, delay_s: float = 1.0) -> None:
        self.name = f"video:{path}"
        target = Path(path).expanduser()
        if not target.parent.is_dir():
            raise SinkError(f"video sink: directory {target.parent} does not exist (for {path})")
        if target.suffix.lower() not in (".mp4", ".mkv", ".mov"):
            raise SinkError(f"video sink: {path}: expected a .mp4, .mkv or .mov file name")
        if not glyphs.is_file():
            raise SinkError(f"video sink: glyph atlas {glyphs} is missing; rebuild the bundle "
                            f"(edgeomni bundle build-default)")
        self.path, self.delay_s = target, delay_s
        self._glyphs = glyphs
        self.board = CaptionBoard()
        self.frames_written = 0
        self.frames_dropped = 0
        self.error: str | None = None
        self._stream: str | None = None
        self._settled = threading.Condition()
        self._settled_until = -math.inf  # every caption starting before this media time has arrived
        self._realtime = True  # until the pipeline says otherwise: frames wait delay_s of wall time at most
        self._closing = False
        self._queued_video = 0
        self._queue: queue.Queue[VideoFrame | AudioFrame | None] = queue.Queue(maxsize=_QUEUE_FRAMES * 4)  # with audio
        self._thread = threading.Thread(target=self._write_loop, name=f"sink:{self.name}", daemon=True)
        self._thread.start()

    def push_frame(self, stream: str, frame: VideoFrame | AudioFrame) -> None:
        """Called by the pipeline for every decoded frame, video and audio; never blocks the event loop."""
        if self._stream is None:
            self._stream = stream
        if stream != self._stream:
            return  # one output file follows one stream
        try:
            self._queue.put_nowait(frame)
        except queue.Full:
            self.frames_dropped += 1
            return
        if isinstance(frame, VideoFrame):
            with self._settled:
                self._queued_video += 1

    @property
    def backlogged(self) -> bool:
        # A failed writer only drains its queue: nothing is held for it, and nobody must wait on it.
        return self.error is None and self._queued_video >= _BACKLOG_FRAMES

    async def send(self, event: Event) -> None:
        ours = event.stream == self._stream
        if isinstance(event, CaptionEvent) and ours:
            self.board.update(event)
        elif isinstance(event, Settled) and ours:
            with self._settled:
                self._settled_until = max(self._settled_until, event.media)
                self._realtime = event.realtime
                self._settled.notify_all()
        if self.error is not None:
            raise SinkError(f"video sink {self.path}: {self.error}")

    async def close(self) -> None:
        with self._settled:
            self._closing = True  # nothing more will arrive: draw what is held
            self._settled.notify_all()
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)

    def _write_loop(self) -> None:
        output: _Output | None = None
        waiting: list[VideoFrame | AudioFrame] = []  # until the file's streams are known
        try:
            while (frame := self._queue.get()) is not None:
                if isinstance(frame, VideoFrame):
                    with self._settled:
                        self._queued_video -= 1
                if output is not None:
                    self._write(output, frame)
                    continue
                waiting.append(frame)
                video = [f for f in waiting if isinstance(f, VideoFrame)]
                if video and (len(video) < len(waiting) or video[-1].pts - video[0].pts >= _AUDIO_WAIT_S):
                    output, waiting = self._open_with(waiting), []
            if output is None and any(isinstance(f, VideoFrame) for f in waiting):
                output = self._open_with(waiting)  # the stream ended while the file was still waiting
            if output is not None:
                output.flush()
        except Exception as exc:  # reported through send(); the pipeline and other sinks go on
            self.error = f"{type(exc).__name__}: {exc}"
            while self._queue.get() is not None:  # keep draining so push_frame never fills up
                pass
        finally:
            if output is not None:
                output.container.close()

    def _open_with(self, waiting: list[VideoFrame | AudioFrame]) -> _Output:
        """Open the file (with an audio stream if any audio is among the waiting frames) and write them."""
        video = [f for f in waiting if isinstance(f, VideoFrame)]
        output = self._open(video[0], with_audio=len(video) < len(waiting))
        for held in waiting:
            self._write(output, held)
        return output

    def _open(self, first: VideoFrame, with_audio: bool) -> _Output:
        image = even_size(first.image)
        container, video = _open_output(self.path, image.shape[1], image.shape[0])
        audio = container.add_stream("aac", rate=AUDIO_RATE, layout="mono") if with_audio else None
        return _Output(container, video, audio, GlyphFont(self._glyphs, scale=max(1, image.shape[1] // 640)))

    def _write(self, output: _Output, frame: VideoFrame | AudioFrame) -> None:
        if isinstance(frame, AudioFrame):
            output.write_audio(frame)
            return
        self._hold(frame)
        output.write_video(frame.pts, burn_in(even_size(frame.image), *self.board.at(frame.pts), output.font))
        self.frames_written += 1

    def _hold(self, frame: VideoFrame) -> None:
        """Wait until the captions covering this frame are out (see the module's docstring)."""
        deadline = frame.arrival + self.delay_s
        with self._settled:
            while not self._closing and self._queued_video < _HOLD_FRAMES and frame.pts >= self._settled_until:
                left = deadline - time.monotonic() if self._realtime else 0.1
                if left <= 0:
                    return
                self._settled.wait(left)


def burn_in(image: np.ndarray, caption: str, note: str, font: GlyphFont) -> np.ndarray:
    """A copy of the frame with the screen note at the top and the caption (two lines at most) at the bottom."""
    out = image.copy()
    margin = max(4, image.shape[0] // 40)
    if note:
        draw_lines(out, font.wrap(f"[screen] {note}", image.shape[1] - 2 * margin, 1), font, top=margin,
                   colour=(255, 230, 120))
    if caption:
        draw_lines(out, font.wrap(caption, image.shape[1] - 2 * margin, 2), font, bottom=image.shape[0] - margin)
    return out


@dataclass
class _Output:
    """The open file: its video stream, its audio stream (None for a source without sound), the caption font."""

    container: av.container.OutputContainer
    video: av.video.VideoStream
    audio: av.audio.AudioStream | None
    font: GlyphFont
    last_video_pts: int = -1
    next_audio_sample: int = 0

    def write_video(self, pts_s: float, image: np.ndarray) -> None:
        pts = max(self.last_video_pts + 1, round(pts_s * 1000))  # strictly increasing, millisecond timestamps
        self.last_video_pts = pts
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = pts, Fraction(1, 1000)
        self.container.mux(self.video.encode(frame))

    def write_audio(self, chunk: AudioFrame) -> None:
        if self.audio is None:
            return
        start = round(chunk.pts * AUDIO_RATE)
        samples = chunk.samples[max(0, self.next_audio_sample - start):]  # never back in time (overlaps trimmed)
        if not len(samples):
            return
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, np.float32)[None], format="flt",
                                           layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts, frame.time_base = max(start, self.next_audio_sample), Fraction(1, AUDIO_RATE)
        self.next_audio_sample = frame.pts + len(samples)
        self.container.mux(self.audio.encode(frame))

    def flush(self) -> None:
        self.container.mux(self.video.encode(None))
        if self.audio is not None:
            self.container.mux(self.audio.encode(None))


def even_size(image: np.ndarray) -> np.ndarray:
    """H.264 4:2:0 needs even sizes: an odd last row/column is dropped."""
    height, width = image.shape[:2]
    return image[: height - height % 2, : width - width % 2]


def _open_output(path: Path, width: int, height: int) -> tuple[av.container.OutputContainer, av.video.VideoStream]:
    options = {"movflags": "+faststart"} if path.suffix.lower() in (".mp4", ".mov") else {}
    container = av.open(str(path), "w", options=options)
    try:
        stream = container.add_stream("libx264", rate=30, options={"preset": "ultrafast", "crf": "23"})
    except (av.FFmpegError, ValueError):
        stream = container.add_stream("mpeg4", rate=30)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.codec_context.time_base = Fraction(1, 1000)
    return container, stream

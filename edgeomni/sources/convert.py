"""Decoded PyAV frames -> EdgeOmni frames: 16 kHz mono audio on one sample clock, RGB video, in pts order."""

from __future__ import annotations

from collections import deque

import av
import numpy as np

from edgeomni.frames import AUDIO_RATE, AudioFrame, Frame, VideoFrame

# Without a cap, libswresample's default matrix sums channels: a 5.1 downmix of a loud scene
# comes out at ~3.4x full scale. rematrix_maxval=1 normalises the matrix so it never clips.
_RESAMPLER_OPTIONS = {"rematrix_maxval": "1.0"}

# A forward jump in input timestamps larger than this is a real gap (packets lost on a network
# stream, a paused device); smaller differences are timestamp rounding and are ignored so that
# consecutive frames stay exactly contiguous.
_RESYNC_S = 0.2


class AudioConverter:
    """Turns av.AudioFrames of any rate/layout/format into 16 kHz mono float32 AudioFrames.

    Output pts come from a running sample count (first sample at the stream's own offset from
    ``origin``), so consecutive frames are contiguous to the sample; they re-anchor only when the
    input timestamps jump forward by more than _RESYNC_S.
    """

    def __init__(self, origin: float = 0.0) -> None:
        self.origin = origin
        self._resampler: av.AudioResampler | None = None
        self._signature: tuple[str, str, int] | None = None
        self._t0: float | None = None
        self._samples = 0

    def push(self, frame: av.AudioFrame | None) -> list[AudioFrame]:
        """Convert one decoded frame; ``None`` flushes the resampler's tail at end of stream."""
        if frame is None:
            return self._convert(self._resampler.resample(None)) if self._resampler else []
        signature = (frame.format.name, frame.layout.name, frame.sample_rate)
        out: list[AudioFrame] = []
        if signature != self._signature:
            # Network streams may switch layout/rate mid-stream; a resampler is fixed to its first
            # input, so drain the old one and start a new one.
            out += self.push(None)
            self._resampler = av.AudioResampler(
                format="flt", layout="mono", rate=AUDIO_RATE, options=_RESAMPLER_OPTIONS
            )
            self._signature = signature
        assert self._resampler is not None
        return out + self._convert(self._resampler.resample(frame))

    @property
    def position(self) -> float:
        """Media time (s) just after the last sample converted so far."""
        return (self._t0 or 0.0) + self._samples / AUDIO_RATE

    def _convert(self, frames: list[av.AudioFrame]) -> list[AudioFrame]:
        out = []
        for f in frames:
            samples = np.clip(f.to_ndarray().reshape(-1), -1.0, 1.0).astype(np.float32, copy=False)
            if samples.size == 0:
                continue
            actual = None if f.time is None else f.time - self.origin
            if self._t0 is None:
                self._t0 = max(0.0, actual or 0.0)
            elif actual is not None and actual - self.position > _RESYNC_S:
                self._t0, self._samples = actual, 0
            out.append(AudioFrame(samples=samples, pts=self.position, arrival=0.0))
            self._samples += samples.size
        return out


def _rotation(frame: av.VideoFrame) -> float:
    try:
        return float(frame.rotation or 0)
    except (AttributeError, TypeError, ValueError):  # older PyAV, or a malformed display matrix
        return 0.0


class VideoConverter:
    """Turns av.VideoFrames into RGB VideoFrames, scaled once in libswscale when a size is asked for."""

    def __init__(self, origin: float = 0.0, size: tuple[int, int] | None = None, fps: float = 30.0) -> None:
        self.origin = origin
        self.size = size
        self.fps = fps
        self.count = 0
        self.position = 0.0

    def push(self, frame: av.VideoFrame) -> VideoFrame:
        # Phones record sideways and say so in the display matrix; frames leave upright, as a player shows them,
        # so faces and text reach vision the right way up. PyAV's rotation is the counterclockwise angle to apply,
        # which is np.rot90's direction.
        turns = round(_rotation(frame) / 90) % 4
        shown_w, shown_h = (frame.height, frame.width) if turns % 2 else (frame.width, frame.height)
        width, height = self.size or (shown_w, shown_h)
        if height <= 0:  # (width, -1): at most `width` wide, aspect kept, never upscaled, even dimensions
            width = min(width, shown_w)
            height = max(2, round(shown_h * width / shown_w / 2) * 2)
        if turns % 2:
            width, height = height, width  # scaled in the stored orientation, turned afterwards
        image = frame.to_ndarray(format="rgb24", width=width, height=height)
        if turns:
            image = np.ascontiguousarray(np.rot90(image, k=turns))
        # Streams without timestamps (some raw/device inputs) fall back to the nominal frame rate;
        # clamping keeps pts monotonic when a stream's first timestamps wobble around the origin.
        pts = frame.time - self.origin if frame.time is not None else self.count / self.fps
        pts = max(pts, self.position if self.count else 0.0)
        frame_out = VideoFrame(image=image, pts=pts, arrival=0.0, index=self.count)
        self.count += 1
        self.position = pts
        return frame_out


class Interleaver:
    """Merges per-stream frame lists into one list in pts order.

    A frame is released once every other unfinished stream has something queued (so nothing
    earlier can still arrive), or once it is older than ``window`` seconds behind the newest frame
    of its stream: a stream that stops sending (a camera whose audio track is silent) must not
    hold the other back for ever.
    """

    def __init__(self, kinds: list[str], window: float) -> None:
        self.pending: dict[str, deque[Frame]] = {kind: deque() for kind in kinds}
        self.finished: set[str] = set()
        self.window = window

    def push(self, kind: str, frames: list[Frame]) -> list[Frame]:
        self.pending[kind].extend(frames)
        return self._release()

    def finish(self, kind: str | None = None) -> list[Frame]:
        """Mark one stream (or all, when kind is None) as ended and release what that allows."""
        self.finished.update([kind] if kind else self.pending)
        return self._release()

    def _release(self) -> list[Frame]:
        out: list[Frame] = []
        while True:
            heads = {k: q[0] for k, q in self.pending.items() if q}
            if not heads:
                return out
            kind = min(heads, key=lambda k: heads[k].pts)
            waiting = any(not q and k not in self.finished for k, q in self.pending.items())
            queue = self.pending[kind]
            if waiting and queue[-1].pts - queue[0].pts <= self.window:
                return out
            out.append(queue.popleft())

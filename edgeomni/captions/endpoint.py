"""Endpointing: VAD probabilities in, whole utterances out (pure logic, no models, easy to test)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from edgeomni.chunking import FixedFrame
from edgeomni.config import SpeechConfig
from edgeomni.frames import AUDIO_RATE


@dataclass(slots=True)
class Utterance:
    audio: np.ndarray
    start: float  # media seconds
    end: float
    last_arrival: float  # delivery time of the last sample in `audio`
    split: bool = False  # cut because it reached max_utterance_s, not because the speaker paused


class Endpointer:
    """Hysteresis on the VAD probability: speech starts above `threshold`, ends after `min_silence_ms`
    below `release` (`long_speech_silence_ms` once it has lasted `long_speech_s`). Speech that still
    reaches `max_utterance_s` is split at its quietest frame, so that no audio is ever dropped."""

    def __init__(self, config: SpeechConfig, frame_samples: int = 512) -> None:
        self.config = config
        frame_ms = 1000.0 * frame_samples / AUDIO_RATE
        self._pad_frames = round(config.pad_ms / frame_ms)
        self._silence_frames = max(1, round(config.min_silence_ms / frame_ms))
        self._min_speech_frames = round(config.min_speech_ms / frame_ms)
        self._max_frames = int(config.max_utterance_s * 1000.0 / frame_ms)
        self._long_frames = int(config.long_speech_s * 1000.0 / frame_ms)
        self._long_silence_frames = max(1, round(config.long_speech_silence_ms / frame_ms))
        self._preroll: deque[FixedFrame] = deque(maxlen=max(1, self._pad_frames))
        self._frames: list[FixedFrame] = []
        self._probs: list[float] = []
        self._last_speech = -1
        self._speech_count = 0
        self.rejected_bursts = 0  # speech-like blips shorter than min_speech_ms: noise, not captions
        self.splits = 0

    @property
    def in_speech(self) -> bool:
        return bool(self._frames)

    def push(self, frame: FixedFrame, prob: float) -> Utterance | None:
        if not self._frames:
            if prob < self.config.threshold:
                self._preroll.append(frame)
                return None
            self._frames = list(self._preroll) if self._pad_frames else []
            self._probs = [0.0] * len(self._frames)
            self._preroll.clear()
        self._frames.append(frame)
        self._probs.append(prob)
        if prob >= self.config.release:
            self._last_speech = len(self._frames) - 1
            self._speech_count += prob >= self.config.threshold
        # Long speech ends at the next short pause, so a monologue is cut at a breath long before the
        # forced split (which has to look back for a cut point, and so comes seconds late).
        needed = self._long_silence_frames if len(self._frames) >= self._long_frames else self._silence_frames
        if len(self._frames) - 1 - self._last_speech >= needed:
            return self._close(self._last_speech + 1 + self._pad_frames)
        if len(self._frames) >= self._max_frames:
            return self._split()
        return None

    def snapshot(self) -> Utterance | None:
        """The utterance in progress, as heard so far (for partial captions); None between utterances."""
        return _join(self._frames) if self._frames else None

    def flush(self) -> Utterance | None:
        """End of stream: whatever speech is in progress still becomes an utterance."""
        if not self._frames:
            return None
        return self._close(min(len(self._frames), self._last_speech + 1 + self._pad_frames))

    def _close(self, cut: int) -> Utterance | None:
        cut = min(cut, len(self._frames))
        frames, tail = self._frames[:cut], self._frames[cut:]
        enough = self._speech_count >= self._min_speech_frames
        self._reset()
        self._preroll.extend(tail[-self._preroll.maxlen :] if tail else [])
        if not enough:
            self.rejected_bursts += 1
            return None
        return _join(frames)

    def _split(self) -> Utterance:
        # Cut at the least speech-like frame of the utterance's last 40%: usually a breath between words.
        lo = int(len(self._frames) * 0.6)
        window = np.asarray(self._probs[lo:]) + np.asarray(
            [float(np.abs(f.samples).mean()) for f in self._frames[lo:]]
        )
        cut = lo + int(window.argmin()) + 1
        head, rest, rest_probs = self._frames[:cut], self._frames[cut:], self._probs[cut:]
        self._reset()
        self._frames, self._probs = rest, rest_probs
        speechy = [i for i, p in enumerate(rest_probs) if p >= self.config.release]
        self._last_speech = speechy[-1] if speechy else -1
        self._speech_count = sum(p >= self.config.threshold for p in rest_probs)
        self.splits += 1
        utterance = _join(head)
        utterance.split = True
        return utterance

    def _reset(self) -> None:
        self._frames, self._probs = [], []
        self._last_speech, self._speech_count = -1, 0


def _join(frames: list[FixedFrame]) -> Utterance:
    audio = np.concatenate([f.samples for f in frames])
    return Utterance(audio, frames[0].pts, frames[0].pts + len(audio) / AUDIO_RATE, frames[-1].arrival)

"""Endpointing: VAD probabilities in, whole utterances out (pure logic, no models, easy to test)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from edgeomni.chunking import FixedFrame
from edgeomni.config import SpeechConfig
from edgeomni.frames import AUDIO_RATE

_QUIET_DB = -120.0
_ONSET_RISE = 0.2  # a quiet frame the VAD likes this much more than the one before is a voice starting, not fading


@dataclass(slots=True)
class Utterance:
    audio: np.ndarray
    start: float  # media seconds
    end: float
    last_arrival: float  # delivery time of the last sample in `audio`
    split: bool = False  # cut because it reached max_utterance_s, not because the speaker paused
    speech_end: float = -1.0  # media time where its last speech frame ends (its pad follows)


class Endpointer:
    """Hysteresis on the VAD probability: speech starts above `threshold`, ends after `min_silence_ms`
    below `release` (`long_speech_silence_ms` once it has lasted `long_speech_s`). Speech that still
    reaches `max_utterance_s` is split at its quietest frame, so that no audio is ever dropped.

    Silero's probability decays 100-400 ms after the voice stops (it stays near 1.0 through trailing
    murmurs and room reverb), which would all be added to the end-of-speech wait. So a frame also counts
    as silence when it is `silence_db` below the loudest frame of the utterance: in clean audio that ends
    the speech where a listener hears it end; in noise (SNR under `silence_db`) it never fires and the
    VAD decides alone."""

    def __init__(self, config: SpeechConfig, frame_samples: int = 512, min_pad_ms: int = 0) -> None:
        self.config = config
        frame_ms = self._frame_ms = 1000.0 * frame_samples / AUDIO_RATE
        self.pad_frames = round(max(config.pad_ms, min_pad_ms) / frame_ms)
        self._silence_frames = max(1, round(config.min_silence_ms / frame_ms))
        self._min_speech_frames = round(config.min_speech_ms / frame_ms)
        self._max_frames = int(config.max_utterance_s * 1000.0 / frame_ms)
        self._long_frames = int(config.long_speech_s * 1000.0 / frame_ms)
        self._long_silence_frames = max(1, round(config.long_speech_silence_ms / frame_ms))
        self._preroll: deque[FixedFrame] = deque(maxlen=max(1, self.pad_frames))
        self._frames: list[FixedFrame] = []
        self._probs: list[float] = []
        self._last_speech = -1
        self._speech_count = 0
        self._loudest = _QUIET_DB
        self._echo_loud, self._echo_frames = 0.0, 0
        self._previous_prob = 0.0
        self._echo_hold = round(1000.0 / frame_ms)  # how long a closed utterance's level still gates a new start
        self.rejected_bursts = 0  # speech-like blips shorter than min_speech_ms: noise, not captions
        self.splits = 0

    def repad(self, min_pad_ms: int) -> None:
        """Another ASR wants another minimum pad (an OTA bundle switch, between utterances): the pre-roll heard
        so far is kept, up to the new length."""
        self.pad_frames = round(max(self.config.pad_ms, min_pad_ms) / self._frame_ms)
        self._preroll = deque(self._preroll, maxlen=max(1, self.pad_frames))

    @property
    def in_speech(self) -> bool:
        return bool(self._frames)

    @property
    def silent_frames(self) -> int:
        """Frames of silence since the last speech frame of the utterance in progress (0 while speaking)."""
        return len(self._frames) - 1 - self._last_speech if self._frames else 0

    @property
    def frames_to_endpoint(self) -> int:
        """Silent frames still needed before the utterance in progress ends (if the silence holds)."""
        return max(0, self._needed_silence() - self.silent_frames)

    def pending(self) -> Utterance | None:
        """The utterance in progress as it would end if the silence that has begun holds: its speech plus
        as much of the trailing pad as has arrived. None while speaking or between utterances. A final
        decoded from it early is the final due at the endpoint, unless speech resumes (`speech_end` moves)."""
        if not self._frames or not self.silent_frames:
            return None
        return _join(self._frames[: self._last_speech + 1 + self.pad_frames], self._speech_end())

    def open_from(self) -> float | None:
        """The earliest media time an utterance not yet closed may start at: the utterance in progress, or the
        pre-roll a new one would begin with. None when no audio is held."""
        held = self._frames or self._preroll
        return held[0].pts if held else None

    def push(self, frame: FixedFrame, prob: float) -> Utterance | None:
        level = _level_db(frame.samples)
        rising, self._previous_prob = prob > self._previous_prob + _ONSET_RISE, prob
        if not self._frames:
            # Right after an utterance ended on the loudness rule, its own fading murmur must not open a new one.
            self._echo_frames = max(0, self._echo_frames - 1)
            quiet_echo = self._echo_frames > 0 and level < self._echo_loud - self.config.silence_db
            if prob < self.config.threshold or quiet_echo:
                self._preroll.append(frame)
                return None
            self._frames = list(self._preroll) if self.pad_frames else []
            self._probs = [0.0] * len(self._frames)
            self._preroll.clear()
        self._frames.append(frame)
        self._probs.append(prob)
        if prob >= self.config.threshold:  # clicks and bumps rarely convince the VAD, so they do not count here
            self._loudest = max(self._loudest, level)
            # Whether this is speech at all (min_speech_ms) is the VAD's call alone: the loudness rule below only
            # says where speech ends, and counting after it made a short word's quiet tail ("left") a burst.
            self._speech_count += 1
        if self.config.silence_db and level < self._loudest - self.config.silence_db and not rising:
            prob = 0.0  # fading far below this speaker's voice: it has stopped, whatever the VAD still says
        if prob >= self.config.release:
            self._last_speech = len(self._frames) - 1
        if self.silent_frames >= self._needed_silence():
            return self._close(self._last_speech + 1 + self.pad_frames)
        if len(self._frames) >= self._max_frames:
            return self._split()
        return None

    def _speech_end(self) -> float:
        last = self._frames[max(self._last_speech, 0)]
        return last.pts + len(last.samples) / AUDIO_RATE

    def _needed_silence(self) -> int:
        # Long speech ends at the next short pause, so a monologue is cut at a breath long before the
        # forced split (which has to look back for a cut point, and so comes seconds late).
        return self._long_silence_frames if len(self._frames) >= self._long_frames else self._silence_frames

    def snapshot(self) -> Utterance | None:
        """The utterance in progress, as heard so far (for partial captions); None between utterances."""
        return _join(self._frames) if self._frames else None

    def flush(self) -> Utterance | None:
        """End of stream: whatever speech is in progress still becomes an utterance."""
        if not self._frames:
            return None
        return self._close(min(len(self._frames), self._last_speech + 1 + self.pad_frames))

    def _close(self, cut: int) -> Utterance | None:
        cut = min(cut, len(self._frames))
        frames, tail = self._frames[:cut], self._frames[cut:]
        speech_end = self._speech_end()
        if self._loudest > _QUIET_DB and self.config.silence_db:
            self._echo_loud, self._echo_frames = self._loudest, self._echo_hold
        enough = self._speech_count >= self._min_speech_frames
        self._reset()
        self._preroll.extend(tail[-self._preroll.maxlen :] if tail else [])
        if not enough:
            self.rejected_bursts += 1
            return None
        return _join(frames, speech_end)

    def _split(self) -> Utterance:
        # Cut at the least speech-like frame of the utterance's last 40%: usually a breath between words.
        lo = int(len(self._frames) * 0.6)
        window = np.asarray(self._probs[lo:]) + np.asarray(
            [float(np.abs(f.samples).mean()) for f in self._frames[lo:]]
        )
        cut = lo + int(window.argmin()) + 1
        head, rest, rest_probs = self._frames[:cut], self._frames[cut:], self._probs[cut:]
        loudest = self._loudest  # the rest continues the same voice
        self._reset()
        self._loudest = loudest
        self._frames, self._probs = rest, rest_probs
        speechy = [i for i, p in enumerate(rest_probs) if p >= self.config.release]
        self._last_speech = speechy[-1] if speechy else -1
        self._speech_count = sum(p >= self.config.threshold for p in rest_probs)
        self.splits += 1
        utterance = _join(head, head[-1].pts + len(head[-1].samples) / AUDIO_RATE)
        utterance.split = True
        return utterance

    def _reset(self) -> None:
        self._frames, self._probs = [], []
        self._last_speech, self._speech_count = -1, 0
        self._loudest = _QUIET_DB


def _level_db(samples: np.ndarray) -> float:
    return 10.0 * float(np.log10(float(np.dot(samples, samples)) / max(len(samples), 1) + 1e-12))


def _join(frames: list[FixedFrame], speech_end: float = -1.0) -> Utterance:
    audio = np.concatenate([f.samples for f in frames])
    end = frames[0].pts + len(audio) / AUDIO_RATE
    return Utterance(audio, frames[0].pts, end, frames[-1].arrival, speech_end=speech_end if speech_end >= 0 else end)

"""A scripted ASR family and VAD for model-free tests of the speech head's scheduling.

The audio itself says where in the stream each sample lies and whether it is speech: sample i of the stream is
+(i + 1) * STEP inside speech and -(i + 1) * STEP in silence. `ScriptedVad` reads the sign; `ScriptedAsr` reads
which stretch of the stream an utterance's audio covers and "hears" exactly the script's words that lie wholly
inside it (a word cut by the end of the audio is heard as its first letters and a "~", as a real model guesses
at a cut word). Decoding can be held on a gate, so a test decides when the worker is busy.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from edgeomni.engines.asr import EMPTY_TRANSCRIPT, Transcript
from edgeomni.frames import AUDIO_RATE, AudioFrame

STEP = 1e-7  # float32 keeps (i + 1) * STEP exact to well under one STEP for an hour of audio


@dataclass(frozen=True)
class Word:
    text: str
    start: float
    end: float


def script_audio(parts: list[tuple[str, float]]) -> tuple[np.ndarray, list[Word]]:
    """Audio for [("words of a phrase", seconds) | ("", seconds of silence)], and the words with their times
    (spread evenly over their phrase)."""
    pieces, words, at = [], [], 0
    for text, seconds in parts:
        n = round(seconds * AUDIO_RATE)
        index = np.arange(at + 1, at + n + 1, dtype=np.float64) * STEP
        pieces.append((index if text else -index).astype(np.float32))
        phrase = text.split()
        for k, word in enumerate(phrase):
            start, end = at + n * k / len(phrase), at + n * (k + 1) / len(phrase)
            words.append(Word(word, start / AUDIO_RATE, end / AUDIO_RATE))
        at += n
    return np.concatenate(pieces), words


def frames_of(audio: np.ndarray, frame_s: float = 0.02) -> list[AudioFrame]:
    step = round(frame_s * AUDIO_RATE)
    return [AudioFrame(audio[i : i + step], i / AUDIO_RATE, 0.0) for i in range(0, len(audio), step)]


class ScriptedDetokenizer:
    def __init__(self) -> None:
        self.vocabulary: list[str] = []

    def token(self, word: str) -> int:
        if word not in self.vocabulary:
            self.vocabulary.append(word)
        return self.vocabulary.index(word)

    def decode(self, ids: list[int]) -> str:
        return " ".join(self.vocabulary[i] for i in ids)

    def starts_word(self, token_id: int) -> bool:
        return True


@dataclass
class ScriptedAsr:
    """Implements `edgeomni.engines.asr.Asr` from a script of timed words."""

    words: list[Word]
    name: str = "scripted"
    gate: threading.Event = field(default_factory=threading.Event)  # decoding waits while it is clear
    calls: list[tuple[float, float]] = field(default_factory=list)  # the stretch each call heard, in order
    family: str = "scripted"
    sample_rate: int = AUDIO_RATE
    min_seconds: float = 0.1
    max_seconds: float = 30.0
    min_pad_ms: int = 0
    tokenizer_role: str = "asr-tokenizer"
    backend: None = None

    def __post_init__(self) -> None:
        self.detokenizer = ScriptedDetokenizer()
        self.gate.set()

    def transcribe(self, audio: np.ndarray, prefix: list[int] | None = None, own_from: int = 0) -> Transcript:
        if len(audio) / AUDIO_RATE < self.min_seconds:
            return EMPTY_TRANSCRIPT
        if not self.gate.wait(timeout=30):
            raise TimeoutError("the test never opened the ASR gate")
        started = time.perf_counter()
        index = np.abs(audio.astype(np.float64)) / STEP
        covered = index[index > 0.5]
        begin, end = (float(covered.min()) - 1) / AUDIO_RATE, float(covered.max()) / AUDIO_RATE
        self.calls.append((round(begin, 3), round(end, 3)))
        heard = []
        for word in self.words:
            if word.start >= begin - 1e-3 and word.end <= end + 1e-3:
                heard.append(self.detokenizer.token(word.text))
            elif word.start >= begin - 1e-3 and word.start < end < word.end:
                heard.append(self.detokenizer.token(word.text[: max(1, len(word.text) // 2)] + "~"))
        forced = list(prefix or [])
        tokens = forced + heard[len(forced) :]  # the forced prefix stands for the first words heard
        return Transcript(self.detokenizer.decode(tokens[own_from:]), tokens, -0.1, 0.0,
                          time.perf_counter() - started)


class ScriptedVad:
    """Speech probability from the samples' sign (see the module docstring)."""

    frame_samples = 512

    def __call__(self, frame: np.ndarray) -> float:
        return 0.95 if float(frame.mean()) > 0 else 0.02

    def reset(self) -> None:
        pass

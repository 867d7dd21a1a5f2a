"""Decoding an utterance with the previous one replayed before it (so a short utterance is not decoded blind).

The previous utterance's audio, a short gap and the new audio are decoded together, with the previous
utterance's tokens forced as the decoder prefix; only the new utterance's own tokens are kept. When Whisper
"hears" the replayed context again over the new audio and writes it out twice, the utterance is decoded
again without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeomni.config import SpeechConfig
from edgeomni.engines.asr import Asr, Transcript
from edgeomni.frames import AUDIO_RATE

_CONTEXT_GAP = np.zeros(int(0.3 * AUDIO_RATE), dtype=np.float32)


@dataclass(slots=True)
class Context:
    """The previous utterance: its audio and the tokens it was decoded to."""

    audio: np.ndarray
    tokens: list[int]


class ContextDecoder:
    """Decodes each utterance after the previous one (`remember` keeps it); counts ASR time and echoes in
    `stats` (the captioner's own counters)."""

    def __init__(self, asr: Asr, config: SpeechConfig, stats: dict[str, float | int]) -> None:
        self.asr, self.config, self.stats = asr, config, stats
        self.context: Context | None = None

    def decode(self, audio: np.ndarray, committed: list[int]) -> tuple[Transcript, list[int]]:
        """Runs in the executor. Returns the transcript and this utterance's own tokens (context removed)."""
        context = self.context
        if context is None:
            return self._transcribe(audio, committed, 0)
        joined = np.concatenate([context.audio, _CONTEXT_GAP, audio])
        transcript, own = self._transcribe(joined, context.tokens + committed, len(context.tokens))
        if echoes_context(own, context.tokens):
            # ("Good morning everyone. Let us get started." written again inside the next sentence)
            self.stats["context_echoes"] += 1
            transcript, own = self._transcribe(audio, committed, 0)
        return transcript, own

    def remember(self, audio: np.ndarray, tokens: list[int], always: bool = False) -> None:
        """Keep this utterance as context for the next one: short ones always help; after a forced split
        (`always`) the next part continues the same sentence and cannot be decoded without it."""
        seconds = len(audio) / AUDIO_RATE
        fits = 0 < seconds <= (self.config.max_utterance_s if always else self.config.context_s)
        self.context = Context(audio, tokens) if fits and tokens else None

    def _transcribe(self, audio: np.ndarray, prefix: list[int], own_from: int) -> tuple[Transcript, list[int]]:
        transcript = self.asr.transcribe(audio, prefix=prefix, own_from=own_from)
        self.stats["asr_seconds"] += transcript.encode_s + transcript.decode_s
        return transcript, transcript.tokens[own_from:]


def echoes_context(own: list[int], context: list[int], min_tokens: int = 4) -> bool:
    """Whether an utterance's own tokens contain the whole previous utterance (its first token aside: its
    spelling changes mid-sentence). A speaker who says it again is still transcribed without the context."""
    probe = context[1:]
    n = len(probe)
    return n >= min_tokens and any(own[i : i + n] == probe for i in range(len(own) - n + 1))


__all__ = ["Context", "ContextDecoder", "echoes_context"]

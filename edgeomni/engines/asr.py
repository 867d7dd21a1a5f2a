"""The speech-recognition seam: what an ASR family implements, and the greedy-decoding helpers they share.

A family (Moonshine, Whisper, ...) is one class satisfying `Asr`: it transcribes one utterance at a time with an
optional forced prefix, says which sample rate it takes and how much audio padding it needs around speech, and
carries the detokenizer the caption heads use to turn its tokens into words. Instances are stateless between calls
and shared by every stream (onnxruntime sessions run from several threads at once); everything per stream (VAD,
endpointing, agreement, context) lives in the speech head. `open_asr` picks the family a bundle ships.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from edgeomni.engines.backend import BackendChoice


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    tokens: list[int]
    mean_logprob: float  # average log-probability of the emitted tokens: a confidence for hard examples
    encode_s: float
    decode_s: float


EMPTY_TRANSCRIPT = Transcript("", [], 0.0, 0.0, 0.0)


class Detokenizer(Protocol):
    """Token ids -> text, and where words begin (what the agreement and the commit lag count in)."""

    def decode(self, ids: list[int]) -> str: ...

    def starts_word(self, token_id: int) -> bool: ...


@runtime_checkable
class Asr(Protocol):
    """One ASR family's engine, shared by every stream.

    - `transcribe(audio, prefix, own_from)`: greedy text of one utterance (float32 mono at `sample_rate`,
      `min_seconds`..`max_seconds`; shorter gives an empty transcript, longer is a ValueError). `prefix` forces the
      first tokens (words already shown as committed, or the previous utterance replayed as context), so the result
      extends them; `own_from` is where this utterance's own tokens start inside `prefix`, for the loop guard.
    - `min_pad_ms`: audio the speech head keeps around speech at least (a family that misreads speech starting on
      its first frame asks for more).
    - `tokenizer_role`: the bundle role of its vocabulary; context carries over a bundle switch only when that
      file is the same (token ids would mean other words otherwise).
    - `backend`: what its heaviest graph runs on where the bundle offers a choice (TensorRT ... CPU), else None.
    """

    family: str
    sample_rate: int
    min_seconds: float
    max_seconds: float
    min_pad_ms: int
    tokenizer_role: str
    detokenizer: Detokenizer
    backend: BackendChoice | None

    def transcribe(self, audio: np.ndarray, prefix: list[int] | None = None, own_from: int = 0) -> Transcript: ...


def utterance_seconds(audio: np.ndarray, rate: int, min_seconds: float, max_seconds: float) -> float | None:
    """The utterance's length, None when it is too short to transcribe; longer than the model takes is an error."""
    seconds = len(audio) / rate
    if seconds < min_seconds:
        return None
    if seconds > max_seconds:
        raise ValueError(f"ASR input: at most {max_seconds:.0f} s per call, got {seconds:.1f} s")
    return seconds


def take_greedy(last: np.ndarray, tokens: list[int], fresh_from: int, eos: int,
                own_from: int = 0) -> tuple[bool, float]:
    """One greedy step on the last position's logits: appends the argmax token unless it is `eos`; returns
    (stop decoding, the token's log-probability). Stops at EOS and when the newest tokens start a loop.
    `own_from`: where this utterance's tokens start after the replayed context (see loop_length)."""
    token = int(last.argmax())
    # The argmax token's log-softmax is -log(sum(exp(logits - max))): stable, no full softmax kept.
    logprob = -math.log(float(np.exp(last - last[token]).sum()))
    if token == eos:
        return True, logprob
    tokens.append(token)
    return loop_length(tokens, fresh_from, own_from) > 0, logprob


_MIN_LOOP = 4  # tokens; shorter immediate repeats ("no, no") are real speech often enough
_MAX_LOOP = 24


def loop_length(tokens: list[int], fresh_from: int, own_from: int = 0) -> int:
    """Length k of an immediate repeat at the end (tokens[-k:] == tokens[-2k:-k]) that includes at least one
    newly decoded token, or 0. Greedy decoding past the end of the audio falls into such loops. Both copies
    must lie in this utterance's own tokens (from `own_from`): a speaker who says the previous utterance again
    repeats the replayed context, and that is speech, not a loop."""
    for k in range(_MIN_LOOP, min(_MAX_LOOP, len(tokens) // 2) + 1):
        if len(tokens) - k >= fresh_from and len(tokens) - 2 * k >= own_from and tokens[-k:] == tokens[-2 * k : -k]:
            return k
    return 0


def drop_loop(tokens: list[int], fresh_from: int, own_from: int = 0) -> list[int]:
    """`tokens` without a trailing loop (see loop_length)."""
    k = loop_length(tokens, fresh_from, own_from)
    return tokens[:-k] if k else tokens


def mean_logprob(total: float, tokens: list[int], prefix: list[int]) -> float:
    """Average log-probability over the decoded tokens and the end-of-text step."""
    return total / max(1, len(tokens) - len(prefix) + 1)


__all__ = ["EMPTY_TRANSCRIPT", "Asr", "Detokenizer", "Transcript", "drop_loop", "loop_length", "mean_logprob",
           "take_greedy", "utterance_seconds"]

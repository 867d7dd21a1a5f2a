"""Moonshine speech recognition: encoder + merged KV-cached decoder, driven with plain onnxruntime."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from edgeomni.bundle import VerifiedBundle
from edgeomni.engines.session import EngineProfile, create_session
from edgeomni.engines.tokenizer import Detokenizer


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    tokens: list[int]
    mean_logprob: float  # average log-probability of the emitted tokens: a confidence for hard examples
    encode_s: float
    decode_s: float


class MoonshineAsr:
    """Greedy decoding of one utterance at a time.

    Stateless between calls, so one instance is shared by every stream; onnxruntime sessions are
    safe to run from several threads at once. Calls are batch 1: the shipped encoder is not batch-safe (rows
    of one batch change each other's outputs, see docs/ARCHITECTURE.md), so streams cannot share a batch.
    """

    min_pad_ms = 0  # the speech head's pad_ms (150) suits it; decode cost grows with every padded frame

    def __init__(self, bundle: VerifiedBundle, profile: EngineProfile | None = None) -> None:
        manifest = bundle.manifest
        encoder, decoder = manifest.by_role("asr-encoder"), manifest.by_role("asr-decoder")
        self.min_seconds = float(encoder.preprocess.get("min_seconds", 0.1))
        self.max_seconds = float(encoder.preprocess.get("max_seconds", 64))
        self.sample_rate = int(encoder.preprocess.get("sample_rate", 16_000))
        params = decoder.preprocess
        self._layers = int(params.get("num_layers", 6))
        self._heads = int(params.get("num_kv_heads", 8))
        self._head_dim = int(params.get("head_dim", 36))
        self._start = int(params.get("start_token", 1))
        self._eos = int(params.get("eos_token", 2))
        self._tokens_per_second = float(params.get("max_tokens_per_second", 6.5))
        self._encoder = create_session(bundle.path / encoder.file, profile)
        self._decoder = create_session(bundle.path / decoder.file, profile)
        self._decoder_inputs = {i.name for i in self._decoder.get_inputs()}
        self._cache_names = [
            f"past_key_values.{layer}.{part}.{kind}"
            for layer in range(self._layers)
            for part in ("decoder", "encoder")
            for kind in ("key", "value")
        ]
        self.detokenizer = Detokenizer(bundle.role_file("asr-tokenizer"))

    def transcribe(self, audio: np.ndarray, prefix: list[int] | None = None, own_from: int = 0) -> Transcript:
        """Transcribe one utterance. `prefix` forces the first tokens (words already shown to the viewer as
        committed), so the result always extends them and they are decoded in a single decoder pass."""
        seconds = utterance_seconds(audio, self.sample_rate, self.min_seconds, self.max_seconds)
        if seconds is None:
            return Transcript("", [], 0.0, 0.0, 0.0)
        started = time.perf_counter()
        values = np.ascontiguousarray(audio, dtype=np.float32)[None, :]
        mask = np.ones_like(values, dtype=np.int64)
        hidden = self._encoder.run(None, {"input_values": values, "attention_mask": mask})[0]
        encoded = time.perf_counter()
        budget = math.ceil(seconds * self._tokens_per_second)
        tokens, logprob = self._greedy_decode(hidden, mask, list(prefix or []), max_tokens=budget, own_from=own_from)
        decoded = time.perf_counter()
        text = self.detokenizer.decode(tokens).strip()
        return Transcript(text, tokens, logprob, encoded - started, decoded - encoded)

    def _greedy_decode(self, hidden: np.ndarray, mask: np.ndarray, prefix: list[int],
                       max_tokens: int, own_from: int = 0) -> tuple[list[int], float]:
        empty = np.zeros((1, self._heads, 0, self._head_dim), dtype=np.float32)
        cache = dict.fromkeys(self._cache_names, empty)
        feed_mask = "encoder_attention_mask" in self._decoder_inputs
        tokens: list[int] = list(prefix)
        logprob_sum = 0.0
        next_ids = np.array([[self._start, *prefix]], dtype=np.int64)
        for step in range(max(4, max_tokens - len(prefix))):
            inputs = {"input_ids": next_ids, "encoder_hidden_states": hidden,
                      "use_cache_branch": np.array([step > 0]), **cache}
            if feed_mask:
                inputs["encoder_attention_mask"] = mask
            logits, *present = self._decoder.run(None, inputs)
            stop, logprob = take_greedy(logits[0, -1], tokens, len(prefix), self._eos, own_from)
            logprob_sum += logprob
            if stop:
                break
            next_ids = np.array([[tokens[-1]]], dtype=np.int64)
            # The encoder half of the cache is computed once on step 0 and reused; only the decoder half grows.
            for name, value in zip(self._cache_names, present, strict=True):
                if step == 0 or ".decoder." in name:
                    cache[name] = value
        return _drop_loop(tokens, len(prefix), own_from), logprob_sum / max(1, len(tokens) - len(prefix) + 1)


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
    `own_from`: where this utterance's tokens start after the replayed context (see _loop_length)."""
    token = int(last.argmax())
    # The argmax token's log-softmax is -log(sum(exp(logits - max))): stable, no full softmax kept.
    logprob = -math.log(float(np.exp(last - last[token]).sum()))
    if token == eos:
        return True, logprob
    tokens.append(token)
    return _loop_length(tokens, fresh_from, own_from) > 0, logprob


_MIN_LOOP = 4  # tokens; shorter immediate repeats ("no, no") are real speech often enough
_MAX_LOOP = 24


def _loop_length(tokens: list[int], fresh_from: int, own_from: int = 0) -> int:
    """Length k of an immediate repeat at the end (tokens[-k:] == tokens[-2k:-k]) that includes at least one
    newly decoded token, or 0. Greedy decoding past the end of the audio falls into such loops. Both copies
    must lie in this utterance's own tokens (from `own_from`): a speaker who says the previous utterance again
    repeats the replayed context, and that is speech, not a loop."""
    for k in range(_MIN_LOOP, min(_MAX_LOOP, len(tokens) // 2) + 1):
        if len(tokens) - k >= fresh_from and len(tokens) - 2 * k >= own_from and tokens[-k:] == tokens[-2 * k : -k]:
            return k
    return 0


def _drop_loop(tokens: list[int], fresh_from: int, own_from: int = 0) -> list[int]:
    k = _loop_length(tokens, fresh_from, own_from)
    return tokens[:-k] if k else tokens

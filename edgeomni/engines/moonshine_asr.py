"""Moonshine speech recognition (the `Asr` family of the default bundle): encoder + merged KV-cached decoder,
driven with plain onnxruntime."""

from __future__ import annotations

import math
import time

import numpy as np

from edgeomni.bundle import VerifiedBundle
from edgeomni.bundle.manifest import Manifest
from edgeomni.engines.asr import EMPTY_TRANSCRIPT, Transcript, drop_loop, mean_logprob, take_greedy, utterance_seconds
from edgeomni.engines.backend import BackendChoice
from edgeomni.engines.session import EngineProfile, create_session
from edgeomni.engines.tokenizer import Detokenizer
from edgeomni.errors import BundleError

ROLES = ("asr-encoder", "asr-decoder", "asr-tokenizer")
_DECODER_FIELDS = ("num_layers", "num_kv_heads", "head_dim", "start_token", "eos_token")


class MoonshineAsr:
    """Greedy decoding of one utterance at a time (implements `edgeomni.engines.asr.Asr`).

    Stateless between calls, so one instance is shared by every stream; onnxruntime sessions are
    safe to run from several threads at once. Calls are batch 1: the shipped encoder is not batch-safe (rows
    of one batch change each other's outputs, see docs/ARCHITECTURE.md), so streams cannot share a batch.
    """

    family = "moonshine"
    min_pad_ms = 0  # the speech head's pad_ms (150) suits it; decode cost grows with every padded frame
    tokenizer_role = ROLES[2]
    backend: BackendChoice | None = None  # ONNX Runtime only: the bundle ships no engine choice for it

    @staticmethod
    def fits(manifest: Manifest) -> bool:
        return all(manifest.has_role(role) for role in ROLES)

    def __init__(self, bundle: VerifiedBundle, profile: EngineProfile | None = None) -> None:
        manifest = bundle.manifest
        encoder, decoder = manifest.by_role(ROLES[0]), manifest.by_role(ROLES[1])
        self.min_seconds = float(encoder.preprocess.get("min_seconds", 0.1))
        self.max_seconds = float(encoder.preprocess.get("max_seconds", 64))
        self.sample_rate = int(encoder.preprocess.get("sample_rate", 16_000))
        params = decoder.preprocess
        missing = [name for name in _DECODER_FIELDS if not isinstance(params.get(name), int)]
        if missing:
            # The cache shapes must match the graph exactly; a guessed default would fail deep inside onnxruntime.
            raise BundleError(f"component role {ROLES[1]}: preprocess field(s) {missing} missing or not integers "
                              f"(expected {list(_DECODER_FIELDS)}, got {params})")
        self._layers, self._heads, self._head_dim = params["num_layers"], params["num_kv_heads"], params["head_dim"]
        self._start, self._eos = params["start_token"], params["eos_token"]
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
        self.detokenizer = Detokenizer(bundle.role_file(ROLES[2]))

    def transcribe(self, audio: np.ndarray, prefix: list[int] | None = None, own_from: int = 0) -> Transcript:
        """Transcribe one utterance. `prefix` forces the first tokens (words already shown to the viewer as
        committed), so the result always extends them and they are decoded in a single decoder pass."""
        seconds = utterance_seconds(audio, self.sample_rate, self.min_seconds, self.max_seconds)
        if seconds is None:
            return EMPTY_TRANSCRIPT
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
        return drop_loop(tokens, len(prefix), own_from), mean_logprob(logprob_sum, tokens, prefix)

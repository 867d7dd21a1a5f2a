"""Whisper speech recognition (an exported tiny.en bundle), driven with numpy + onnxruntime only.

The encoder graph turns 30 s of log-mel features into every decoder layer's cross-attention keys/values;
the decoder graph is called once for the prompt (+ forced prefix) and then once per token, feeding its
self-attention cache back. Greedy, English, no timestamps: the prompt is <|startoftranscript|><|notimestamps|>.
Implements `edgeomni.engines.asr.Asr`, like MoonshineAsr, so the speech head takes either.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeomni.bundle import VerifiedBundle
from edgeomni.bundle.manifest import Manifest
from edgeomni.engines.asr import (
    EMPTY_TRANSCRIPT,
    Transcript,
    drop_loop,
    mean_logprob,
    take_greedy,
    utterance_seconds,
)
from edgeomni.engines.backend import BackendChoice, open_engine
from edgeomni.engines.session import EngineProfile, create_session
from edgeomni.engines.whisper_features import CHUNK_SAMPLES, FRAMES, HOP, SAMPLE_RATE, LogMel
from edgeomni.engines.whisper_tokenizer import ByteLevelDetokenizer
from edgeomni.errors import BundleError

ROLES = ("asr-whisper-encoder", "asr-whisper-decoder", "asr-whisper-tokenizer", "asr-whisper-mel")


WINDOWS_RULE = "increasing whole seconds in 10..30 ending with 30"


def valid_windows(windows: object) -> bool:
    """Encoder windows a bundle or a distillation may name (WINDOWS_RULE). The last is Whisper's own 30 s, so
    no utterance the engine accepts (up to 30 s) is ever cut to fit a shorter window; under 10 s tiny.en
    breaks down (docs/BENCHMARKS.md)."""
    return (isinstance(windows, tuple | list) and bool(windows)
            and all(type(w) is int and 10 <= w <= 30 for w in windows)
            and list(windows) == sorted(set(windows)) and windows[-1] == 30)


def window_frames(samples: int, windows_s: tuple[int, ...]) -> int:
    """Mel frames of the shortest of `windows_s` (sorted) that holds `samples` of audio and 1 s more, else the
    longest. The export's distillation calls this too, so a student learns on the windows it will run."""
    needed = samples / SAMPLE_RATE + 1.0
    seconds = next((w for w in windows_s if w >= needed), windows_s[-1])
    return min(FRAMES, seconds * SAMPLE_RATE // HOP)


@dataclass(frozen=True)
class WhisperDecoding:
    """How the decoder is driven; read from the decoder component's `preprocess` fields."""

    num_layers: int
    num_heads: int
    head_dim: int
    start_token: int = 50257
    no_timestamps_token: int = 50362
    eos_token: int = 50256
    suppress_ids: tuple[int, ...] = ()
    suppress_from: int = 50257  # every special token from here on (timestamps, languages, tasks) is never emitted
    suppress_begin: tuple[int, ...] = (220, 50256)  # not as the first token: a bare space, end-of-text
    max_target_positions: int = 448
    max_tokens_per_second: float = 6.5
    # Encoder windows (s) an encoder with a free frame axis runs: the shortest that holds the audio and 1 s
    # more. Whisper was trained on 30 s only; on the bench cuts 15 s kept the WER (9.7% vs 11.8% at 30 s) for a
    # third of the encoder time, while 2-5 s windows fell apart (23% WER): docs/BENCHMARKS.md.
    windows_s: tuple[int, ...] = (15, 30)

    @classmethod
    def from_preprocess(cls, params: dict[str, Any]) -> WhisperDecoding:
        try:
            return cls(
                num_layers=int(params["num_layers"]), num_heads=int(params["num_heads"]),
                head_dim=int(params["head_dim"]), start_token=int(params.get("start_token", 50257)),
                no_timestamps_token=int(params.get("no_timestamps_token", 50362)),
                eos_token=int(params.get("eos_token", 50256)),
                suppress_ids=tuple(int(i) for i in params.get("suppress_ids", ())),
                suppress_from=int(params.get("suppress_from", 50257)),
                suppress_begin=tuple(int(i) for i in params.get("suppress_begin", (220, 50256))),
                max_target_positions=int(params.get("max_target_positions", 448)),
                max_tokens_per_second=float(params.get("max_tokens_per_second", 6.5)),
                windows_s=tuple(sorted(int(w) for w in params.get("windows_s", cls.windows_s))))
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"component role asr-whisper-decoder: preprocess field missing or malformed: {exc!r} "
                              f"(expected num_layers, num_heads, head_dim, ...)") from None

    @property
    def prompt(self) -> list[int]:
        return [self.start_token, self.no_timestamps_token]


class WhisperAsr:
    """Greedy decoding of one utterance (<= 30 s) at a time; stateless between calls, shared by all streams.

    Encoder calls are not batched across streams: every call is a whole 15 or 30 s window, so batching would only
    multiply the padding work.
    """

    family = "whisper"
    tokenizer_role = ROLES[2]
    min_seconds = 0.1
    max_seconds = CHUNK_SAMPLES / SAMPLE_RATE
    # tiny.en misreads speech that starts on (nearly) the first frame it hears: on the bench's speech set the
    # streaming WER is 11.0% with the speech head's 150 ms of pad and 7.2% with 500 ms (offline: 7.0%). Every
    # call pays a whole 15 or 30 s window anyway, so the extra audio costs next to nothing.
    min_pad_ms = 500
    sample_rate = SAMPLE_RATE
    backend: BackendChoice | None = None  # what the bundle's encoder runs on (TensorRT engine ... CPU)

    @staticmethod
    def fits(manifest: Manifest) -> bool:
        return all(manifest.has_role(role) for role in ROLES)

    def __init__(self, bundle: VerifiedBundle, profile: EngineProfile | None = None) -> None:
        manifest = bundle.manifest
        decoder = manifest.by_role(ROLES[1])
        # The encoder may ship as a TensorRT engine too (export target `tensorrt`); the decoder is ONNX only.
        encoder, self.backend = open_engine(bundle, ROLES[0], profile, engine_optional=True)
        self._setup(encoder, bundle.path / decoder.file, bundle.role_file(ROLES[2]),
                    bundle.role_file(ROLES[3]), WhisperDecoding.from_preprocess(decoder.preprocess), profile)

    @classmethod
    def from_files(cls, encoder: Path, decoder: Path, vocabulary: Path, mel: Path, decoding: WhisperDecoding,
                    profile: EngineProfile | None = None) -> WhisperAsr:
        """Build from loose files (the export stage evaluates candidate graphs before a bundle exists)."""
        asr = cls.__new__(cls)
        asr._setup(create_session(encoder, profile), decoder, vocabulary, mel, decoding, profile)
        return asr

    def _setup(self, encoder: Any, decoder: Path, vocabulary: Path, mel: Path, decoding: WhisperDecoding,
               profile: EngineProfile | None) -> None:
        self.decoding = decoding
        with np.load(mel) as arrays:
            if "filters" not in arrays:
                raise BundleError(f"{mel}: expected an array named 'filters' (the mel filterbank), got {arrays.files}")
            self.features = LogMel(arrays["filters"])
        self._encoder = encoder
        # Bundles exported before the encoder's frame axis was freed take 3000 frames (30 s) and nothing else.
        self._free_window = not isinstance(self._encoder.get_inputs()[0].shape[2], int)
        if self._free_window and not valid_windows(decoding.windows_s):
            raise BundleError(f"{decoder}: preprocess windows_s: expected {WINDOWS_RULE}, "
                              f"got {list(decoding.windows_s)}")
        self._decoder = create_session(decoder, profile)
        self.detokenizer = ByteLevelDetokenizer(vocabulary, first_special=decoding.eos_token)
        vocab = int(self._decoder.get_outputs()[0].shape[-1] or len(self.detokenizer))
        # Additive masks on the logits: -inf where a token may never be emitted (first step: also suppress_begin).
        self._mask = np.zeros(vocab, dtype=np.float32)
        self._mask[list(decoding.suppress_ids)] = -np.inf
        self._mask[decoding.suppress_from :] = -np.inf
        self._mask[decoding.eos_token] = 0.0
        self._first_mask = self._mask.copy()
        self._first_mask[list(decoding.suppress_begin)] = -np.inf

    def encode(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        features = self.features(audio)[None]
        frames = self.window_frames(len(audio))
        cross_k, cross_v = self._encoder.run(None, {"input_features": features[:, :, :frames]})
        return cross_k, cross_v

    def window_frames(self, samples: int) -> int:
        """Mel frames the encoder runs on for `samples` of audio: the shortest window that holds it and 1 s more
        (speech never touches the window's edge), or the whole 30 s for a fixed-window encoder."""
        return window_frames(samples, self.decoding.windows_s) if self._free_window else FRAMES

    def empty_cache(self) -> np.ndarray:
        d = self.decoding
        return np.zeros((d.num_layers, 1, d.num_heads, 0, d.head_dim), dtype=np.float32)

    def decode_step(self, ids: np.ndarray, self_k: np.ndarray, self_v: np.ndarray, cross_k: np.ndarray,
                    cross_v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One decoder call: logits for `ids` (1, T) and the self-attention cache grown by T positions."""
        logits, new_k, new_v = self._decoder.run(None, {"input_ids": ids, "self_k": self_k, "self_v": self_v,
                                                        "cross_k": cross_k, "cross_v": cross_v})
        return logits, new_k, new_v

    def transcribe(self, audio: np.ndarray, prefix: list[int] | None = None, own_from: int = 0) -> Transcript:
        """Transcribe one utterance; `prefix` (already committed tokens) is forced in the first decoder pass."""
        seconds = utterance_seconds(audio, self.sample_rate, self.min_seconds, self.max_seconds)
        if seconds is None:
            return EMPTY_TRANSCRIPT
        started = time.perf_counter()
        cross_k, cross_v = self.encode(audio)
        encoded = time.perf_counter()
        budget = max(8, math.ceil(seconds * self.decoding.max_tokens_per_second))
        tokens, logprob = self._greedy_decode(cross_k, cross_v, list(prefix or []), budget, own_from)
        decoded = time.perf_counter()
        text = self.detokenizer.decode(tokens).strip()
        return Transcript(text, tokens, logprob, encoded - started, decoded - encoded)

    def _greedy_decode(self, cross_k: np.ndarray, cross_v: np.ndarray, prefix: list[int],
                       max_tokens: int, own_from: int = 0) -> tuple[list[int], float]:
        d = self.decoding
        self_k = self_v = self.empty_cache()
        prompt = [*d.prompt, *prefix]
        room = d.max_target_positions - len(prompt)
        tokens, logprob_sum = list(prefix), 0.0
        next_ids = np.array([prompt], dtype=np.int64)
        for step in range(max(0, min(max_tokens, room))):
            logits, self_k, self_v = self.decode_step(next_ids, self_k, self_v, cross_k, cross_v)
            # The "begin" suppression applies to the first token of the transcript, not after a forced prefix.
            last = logits[0, -1] + (self._first_mask if step == 0 and not prefix else self._mask)
            stop, logprob = take_greedy(last, tokens, len(prefix), d.eos_token, own_from)
            logprob_sum += logprob
            if stop:
                break
            next_ids = np.array([[tokens[-1]]], dtype=np.int64)
        return drop_loop(tokens, len(prefix), own_from), mean_logprob(logprob_sum, tokens, prefix)

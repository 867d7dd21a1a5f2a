"""A Whisper model as the ONNX pair the runtime runs: FP32 encoder + KV-cached decoder (onnx_graph.py), their
INT8 twins (encoder static QDQ, decoder dynamic), opened as the runtime's own WhisperAsr, and timed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeomni.engines.session import EngineProfile
from edgeomni.engines.whisper_asr import WhisperAsr, WhisperDecoding
from edgeomni.export.steps.quantize_whisper import quantize_decoder, quantize_encoder
from edgeomni.export.whisper.ct2_to_hf import Ct2Whisper
from edgeomni.export.whisper.evaluate import latency
from edgeomni.export.whisper.onnx_graph import check_against_transformers, export_whisper_onnx


@dataclass
class WhisperPair:
    """One model's ONNX pair in FP32 and INT8, and what was measured on it."""

    fp32: tuple[Path, Path]
    int8: tuple[Path, Path]
    shapes: dict[str, Any]
    decoding: Any = None


def export_pair(model: Any, ct2: Ct2Whisper, prefix: str, work: Path, features: np.ndarray, method: str,
                activations: str, report: dict[str, Any], progress: Callable[[str], None],
                check: tuple[np.ndarray, list[int]], windows_s: tuple[int, ...] | None = None) -> WhisperPair:
    """torch model -> FP32 ONNX (checked against transformers) -> INT8 (encoder static, decoder dynamic).
    `windows_s`: the encoder windows the runtime may run (None: WhisperDecoding's default)."""
    pair = WhisperPair(fp32=(work / f"{prefix}encoder_fp32.onnx", work / f"{prefix}decoder_fp32.onnx"),
                       int8=(work / f"{prefix}encoder_int8.onnx", work / f"{prefix}decoder_int8.onnx"), shapes={})
    pair.shapes = export_whisper_onnx(model, *pair.fp32, progress=progress)
    diff = check_against_transformers(model, *pair.fp32, *check)
    report[f"{prefix}onnx_vs_transformers_max_abs_logit_diff"] = diff
    progress(f"    {prefix or 'model '}ONNX vs transformers: max |logit diff| {diff:.2e}")
    pair.decoding = WhisperDecoding(num_layers=pair.shapes["num_layers"], num_heads=pair.shapes["num_heads"],
                                    head_dim=pair.shapes["head_dim"],
                                    suppress_ids=tuple(ct2.config.get("suppress_ids", [])),
                                    suppress_begin=tuple(ct2.config.get("suppress_ids_begin", [220, 50256])),
                                    max_target_positions=pair.shapes["max_target_positions"],
                                    windows_s=windows_s or WhisperDecoding.windows_s)
    report.setdefault("quantization", {})[prefix.rstrip("_") or "model"] = {
        "encoder": quantize_encoder(pair.fp32[0], pair.int8[0], features, method, activations, progress, work=work),
        "decoder": quantize_decoder(pair.fp32[1], pair.int8[1])}
    return pair


def pair_asr(encoder: Path, decoder: Path, assets: dict[str, Path], decoding: Any, threads: int) -> WhisperAsr:
    """The runtime's WhisperAsr on loose files (any FP32/INT8 mix), CPU, `threads` threads."""
    profile = EngineProfile(("CPUExecutionProvider",), threads)
    return WhisperAsr.from_files(encoder, decoder, assets["vocabulary"], assets["mel"], decoding, profile)


def timings(pairs: dict[str, tuple[Path, Path]], assets: dict[str, Path], decoding: Any, audio: np.ndarray,
            runs: int) -> dict[str, Any]:
    """1-thread latency (the runtime's default) of the encoder, one decoder step, and a whole utterance."""
    out: dict[str, Any] = {"threads": 1, "utterance_seconds": round(len(audio) / 16_000, 2)}
    for kind, (encoder, decoder) in pairs.items():
        asr = pair_asr(encoder, decoder, assets, decoding, threads=1)
        cross_k, cross_v = asr.encode(audio)
        empty = asr.empty_cache()
        _, past_k, past_v = asr.decode_step(np.array([decoding.prompt]), empty, empty, cross_k, cross_v)
        step = (np.array([[440]]), past_k, past_v, cross_k, cross_v)  # one token after the 2-token prompt
        out[kind] = {"encoder": latency(lambda a=asr: a.encode(audio), runs),
                     "decoder_step": latency(lambda a=asr, s=step: a.decode_step(*s), runs * 5),
                     "utterance": latency(lambda a=asr: a.transcribe(audio), runs),
                     "text": asr.transcribe(audio).text}
    return out

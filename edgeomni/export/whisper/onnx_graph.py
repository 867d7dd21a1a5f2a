"""Export the transformers Whisper as two ONNX graphs that plain onnxruntime drives with a KV cache.

- encoder: input_features (1, 80, F) -> cross_k, cross_v (layers, 1, heads, F / 2, head_dim): the encoder
  output already projected to every decoder layer's cross-attention keys/values, computed once per utterance.
  F is 3000 (30 s) in training; shorter windows (positions sliced) cost proportionally less.
- decoder: input_ids (1, T), self_k/self_v (layers, 1, heads, P, head_dim) (P = 0 on the first call),
  cross_k, cross_v -> logits (1, T, vocab), new_self_k/new_self_v (..., P + T, ...).
One decoder graph without an If branch (unlike optimum's merged decoder) keeps dynamic quantization simple.
The decoder forward is written out here from the transformers modules' own weights, because the library's
cache objects do not trace to ONNX cleanly; `check_against_transformers` proves it computes the same logits.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgeomni.errors import ExportError

OPSET = 17


def _heads(x: Any, heads: int) -> Any:
    batch, length, width = x.shape
    return x.view(batch, length, heads, width // heads).transpose(1, 2)


def _modules() -> tuple[Any, Any]:
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self, whisper: Any) -> None:
            super().__init__()
            self.encoder = whisper.model.encoder
            self.layers = whisper.model.decoder.layers
            self.heads = whisper.config.encoder_attention_heads
            self.cross_heads = whisper.config.decoder_attention_heads

        def _split(self, x: torch.Tensor, heads: int | None = None) -> torch.Tensor:  # (T, d) -> (heads, T, hd)
            return _heads(x.unsqueeze(0), heads or self.heads)[0]

        def _layer(self, layer: Any, x: torch.Tensor) -> torch.Tensor:
            attn = layer.self_attn
            h = layer.self_attn_layer_norm(x)
            query = self._split(attn.q_proj(h) * attn.scaling)
            mixed = torch.softmax(query @ self._split(attn.k_proj(h)).transpose(-1, -2), dim=-1) @ self._split(
                attn.v_proj(h))
            x = x + attn.out_proj(mixed.transpose(0, 1).reshape(x.shape[0], -1))
            return x + layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(x))))

        def forward(self, input_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            # transformers' own forward insists on 3000 frames; written out, the window can be any even length
            # up to 30 s (positions sliced to it). Batch 1 and (T, d) rows, so every Linear traces as one Gemm,
            # the form the static INT8 recipe was measured on (3D MatMul + Add broke it: docs/BENCHMARKS.md).
            enc = self.encoder
            x = torch.nn.functional.gelu(enc.conv1(input_features))
            x = torch.nn.functional.gelu(enc.conv2(x))[0].transpose(0, 1)
            x = x + enc.embed_positions.weight[: x.shape[0]]
            for layer in enc.layers:
                x = self._layer(layer, x)
            hidden = enc.layer_norm(x)
            keys = [self._split(layer.encoder_attn.k_proj(hidden), self.cross_heads) for layer in self.layers]
            values = [self._split(layer.encoder_attn.v_proj(hidden), self.cross_heads) for layer in self.layers]
            return torch.stack(keys).unsqueeze(1), torch.stack(values).unsqueeze(1)

    class Decoder(torch.nn.Module):
        def __init__(self, whisper: Any) -> None:
            super().__init__()
            self.decoder = whisper.model.decoder
            self.heads = whisper.config.decoder_attention_heads
            # One (d_model, vocab) matrix serves both the token lookup (Gather on axis 1) and the tied output
            # projection (MatMul): exporting the (vocab, d_model) embedding plus its transpose would store
            # the 80 MB table twice, and dynamic INT8 shares one quantized tensor only if both use one name.
            self.embedding_t = torch.nn.Parameter(whisper.model.decoder.embed_tokens.weight.detach().T.contiguous())

        def _attend(self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, attention: Any,
                    mask: torch.Tensor | None) -> torch.Tensor:
            scores = (query * attention.scaling) @ keys.transpose(-1, -2)
            if mask is not None:
                scores = scores + mask
            mixed = torch.softmax(scores, dim=-1) @ values
            batch, _, length, _ = mixed.shape
            return attention.out_proj(mixed.transpose(1, 2).reshape(batch, length, -1))

        def forward(self, input_ids: torch.Tensor, self_k: torch.Tensor, self_v: torch.Tensor,
                    cross_k: torch.Tensor, cross_v: torch.Tensor) -> tuple[torch.Tensor, ...]:
            past = self_k.shape[3]
            length = input_ids.shape[1]
            positions = torch.arange(length) + past
            # Batch 1 (the runtime decodes one utterance per call): (d_model, T) -> (1, T, d_model).
            embedded = self.embedding_t[:, input_ids.reshape(-1)].T.unsqueeze(0)
            x = embedded + self.decoder.embed_positions.weight[positions]
            # Causal mask over past + new positions: new token i sees every key up to its own position.
            key_pos = torch.arange(past + length)[None, :]
            mask = torch.where(key_pos > positions[:, None], torch.tensor(float("-inf")), torch.tensor(0.0))
            new_k, new_v = [], []
            for i, layer in enumerate(self.decoder.layers):
                h = layer.self_attn_layer_norm(x)
                attn = layer.self_attn
                keys = torch.cat([self_k[i], _heads(attn.k_proj(h), self.heads)], dim=2)
                values = torch.cat([self_v[i], _heads(attn.v_proj(h), self.heads)], dim=2)
                new_k.append(keys)
                new_v.append(values)
                x = x + self._attend(_heads(attn.q_proj(h), self.heads), keys, values, attn, mask)
                h = layer.encoder_attn_layer_norm(x)
                cross = layer.encoder_attn
                x = x + self._attend(_heads(cross.q_proj(h), self.heads), cross_k[i], cross_v[i], cross, None)
                h = layer.final_layer_norm(x)
                x = x + layer.fc2(layer.activation_fn(layer.fc1(h)))
            x = self.decoder.layer_norm(x)
            logits = x @ self.embedding_t
            return logits, torch.stack(new_k), torch.stack(new_v)

    return Encoder, Decoder


def export_whisper_onnx(whisper: Any, encoder_path: Path, decoder_path: Path,
                        progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Write the two FP32 graphs; return their shapes (for the bundle manifest's preprocess fields)."""
    import torch

    encoder_cls, decoder_cls = _modules()
    encoder, decoder = encoder_cls(whisper).eval(), decoder_cls(whisper).eval()
    config = whisper.config
    layers, heads = config.decoder_layers, config.decoder_attention_heads
    head_dim = config.d_model // heads
    features = torch.zeros(1, config.num_mel_bins, 2 * config.max_source_positions)
    Path(encoder_path).parent.mkdir(parents=True, exist_ok=True)
    # The tracer warns about shape checks and constant masks that are fixed by design (batch 1).
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        progress("    tracing the encoder (+ cross-attention K/V projections)")
        window_axes = {"input_features": {2: "frames"}, "cross_k": {3: "positions"}, "cross_v": {3: "positions"}}
        torch.onnx.export(encoder, (features,), str(encoder_path), dynamo=False, opset_version=OPSET,
                          input_names=["input_features"], output_names=["cross_k", "cross_v"],
                          dynamic_axes=window_axes)
        cross_k, cross_v = encoder(features)
        past = torch.zeros(layers, 1, heads, 3, head_dim)
        ids = torch.tensor([[50257, 50362]])
        progress("    tracing the decoder with its self-attention KV cache")
        cache_axes = {3: "past"}
        torch.onnx.export(
            decoder, (ids, past, past, cross_k, cross_v), str(decoder_path), dynamo=False, opset_version=OPSET,
            input_names=["input_ids", "self_k", "self_v", "cross_k", "cross_v"],
            output_names=["logits", "new_self_k", "new_self_v"],
            dynamic_axes={"input_ids": {1: "tokens"}, "self_k": cache_axes, "self_v": cache_axes,
                          "cross_k": {3: "positions"}, "cross_v": {3: "positions"},
                          "logits": {1: "tokens"}, "new_self_k": {3: "total"}, "new_self_v": {3: "total"}})
    return {"num_layers": layers, "num_heads": heads, "head_dim": head_dim, "n_mels": config.num_mel_bins,
            "vocab_size": config.vocab_size, "max_target_positions": config.max_target_positions}


def check_against_transformers(whisper: Any, encoder_path: Path, decoder_path: Path, features: np.ndarray,
                               tokens: list[int], tolerance: float = 1e-2) -> float:
    """Largest |logit difference| between the ONNX pair (run with a growing cache) and transformers' forward."""
    import onnxruntime as ort
    import torch

    enc = ort.InferenceSession(str(encoder_path), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(decoder_path), providers=["CPUExecutionProvider"])
    cross_k, cross_v = enc.run(None, {"input_features": features[None]})
    layers, _, heads, _, head_dim = cross_k.shape
    self_k = self_v = np.zeros((layers, 1, heads, 0, head_dim), dtype=np.float32)
    got = []
    prompt, rest = tokens[:2], tokens[2:]
    for chunk in [prompt, *[[t] for t in rest]]:
        logits, self_k, self_v = dec.run(None, {"input_ids": np.array([chunk], dtype=np.int64), "self_k": self_k,
                                                "self_v": self_v, "cross_k": cross_k, "cross_v": cross_v})
        got.append(logits[0])
    with torch.inference_mode():
        ref = whisper(input_features=torch.from_numpy(features[None]), decoder_input_ids=torch.tensor([tokens]),
                      use_cache=False).logits[0].numpy()
    diff = float(np.abs(np.concatenate(got) - ref).max())
    if diff > tolerance:
        raise ExportError(f"ONNX Whisper differs from transformers: max |logit diff| {diff:.4f} > {tolerance}")
    return diff

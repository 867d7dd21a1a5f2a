"""The accuracy gate: INT8 against FP32 on held-out data (never the calibration set), and the nodes to keep
in FP32 when the gate does not hold.

Metrics: top-1 agreement for classifiers, mean cosine similarity of the outputs for encoders. Sensitive
nodes are found the standard way: every intermediate tensor of the QDQ model is compared with its FP32
twin (signal-to-quantization-noise ratio, onnxruntime's qdq_loss_debug); the nodes producing the noisiest
tensors are excluded first.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np
import onnx

from edgeomni.engines.image_preprocess import IMAGENET_STD
from edgeomni.export.steps.quantize_int8 import ArrayCalibrationReader, logits


def score(metric: str, reference: np.ndarray, got: np.ndarray) -> float:
    """The gate's figure for INT8 outputs `got` against the FP32 outputs `reference` on the same inputs."""
    if metric == "top1_agreement":
        return float(np.mean(reference.argmax(axis=1) == got.argmax(axis=1)))
    a, b = reference.reshape(len(reference), -1), got.reshape(len(got), -1)
    cosine = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return float(cosine.mean())


def agreement_by_margin(reference: np.ndarray, got: np.ndarray,
                        margins: tuple[float, ...] = (0.1, 0.2, 0.3)) -> list[dict[str, float | int]]:
    """Top-1 agreement on the held-out inputs where FP32 (`reference` logits) is decisive: its top-1 softmax
    probability leads the second by at least each margin. Says whether INT8 flips only knife-edge answers or
    confident ones too."""
    shifted = np.exp(reference - reference.max(axis=1, keepdims=True))
    top2 = np.sort(shifted / shifted.sum(axis=1, keepdims=True), axis=1)[:, -2:]
    lead, agree = top2[:, 1] - top2[:, 0], reference.argmax(axis=1) == got.argmax(axis=1)
    return [{"min_margin": m, "inputs": int((lead >= m).sum()),
             "top1_agreement": round(float(agree[lead >= m].mean()), 4) if (lead >= m).any() else None}
            for m in margins]


def fp32_self_agreement(fp32: Path, heldout: np.ndarray, reference: np.ndarray, grey_levels: float = 1.0,
                        seed: int = 0) -> float:
    """Top-1 agreement of the FP32 model (`reference`: its logits on `heldout`) with itself when Gaussian noise
    of `grey_levels` (of 255) is added to the held-out images: the floor below which an INT8 agreement figure
    says more about the images (low top-1 margins) than about the quantization. Inputs are ImageNet-normalised,
    so one grey level is 1/255/std."""

    std = np.asarray(IMAGENET_STD, dtype=np.float32).reshape(1, -1, 1, 1)
    noise = np.random.default_rng(seed).normal(0.0, 1.0, heldout.shape).astype(np.float32) * grey_levels / 255 / std
    noisy = logits(fp32, heldout + noise)
    return round(float(np.mean(reference.argmax(axis=1) == noisy.argmax(axis=1))), 4)


def sensitive_nodes(fp32: Path, int8: Path, samples: np.ndarray, input_name: str, skip: set[str],
                    limit: int) -> list[tuple[str, float]]:
    """The `limit` FP32-graph nodes whose outputs the quantization hurts most: [(node, SQNR dB)], worst first."""
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    with tempfile.TemporaryDirectory(prefix="edgeomni-gate-") as tmp:
        float_aug, qdq_aug = Path(tmp) / "float.onnx", Path(tmp) / "qdq.onnx"
        modify_model_output_intermediate_tensors(str(fp32), str(float_aug))
        modify_model_output_intermediate_tensors(str(int8), str(qdq_aug))
        with contextlib.redirect_stdout(io.StringIO()):
            float_acts = collect_activations(str(float_aug), ArrayCalibrationReader(input_name, samples))
            qdq_acts = collect_activations(str(qdq_aug), ArrayCalibrationReader(input_name, samples))
    errors = compute_activation_error(create_activation_matching(qdq_acts, float_acts))
    # Node names of the quantized graph are those quantize_static knows (after its pre-processing), so map
    # tensors to producers there, leaving out the Q/DQ pairs it inserted.
    producer = {out: node.name for node in onnx.load(str(int8)).graph.node for out in node.output
                if node.op_type not in ("QuantizeLinear", "DequantizeLinear")}
    ranked = sorted(((producer[t], float(e["qdq_err"])) for t, e in errors.items()
                     if t in producer and "qdq_err" in e and np.isfinite(e["qdq_err"])), key=lambda x: x[1])
    seen: set[str] = set()
    worst = []
    for node, sqnr in ranked:
        if node not in skip and node not in seen:
            seen.add(node)
            worst.append((node, round(sqnr, 2)))
    return worst[:limit]

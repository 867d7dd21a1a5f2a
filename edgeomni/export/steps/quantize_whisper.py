"""INT8 for the Whisper pair: static QDQ for the encoder's linear layers, dynamic INT8 for the decoder."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeomni.export.steps.quantize_int8 import quantize_int8

# Only layers with weights are quantized. Attention's activation x activation products stay float: their
# softmax probabilities over 1500 frames are ~1e-3, below one int8 step of a [0, 1] range, and quantizing
# them (with LayerNorm, GELU and the residual adds) took WER from 6.8% to 96% on the speech set.
WEIGHT_OPS = ("Conv", "Gemm", "MatMul")


def float_nodes(model_path: Path) -> tuple[list[str], dict[str, int]]:
    """Nodes to keep in float (everything except weight-bearing Conv/Gemm/MatMul), and a count by op type."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    weights = {i.name for i in model.graph.initializer}
    excluded: list[str] = []
    kinds: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type in WEIGHT_OPS and any(name in weights for name in node.input):
            continue
        excluded.append(node.name)
        kinds[node.op_type] = kinds.get(node.op_type, 0) + 1
    return excluded, kinds


def quantize_encoder(fp32: Path, int8: Path, features: np.ndarray, method: str = "percentile",
                     activations: str = "uint8-asymmetric", progress: Callable[[str], None] = print,
                     keep_fp32: Sequence[str] = (), work: Path | None = None) -> dict[str, Any]:
    """Static INT8 QDQ of the linear layers: per-channel symmetric int8 weights; activations uint8 asymmetric by
    default, which ONNX Runtime's x86 kernels run as integer GEMMs (1.7x faster than FP32 here, where symmetric
    int8 activations ran no faster than FP32) and which fits the one-sided GELU outputs feeding fc2.

    `keep_fp32`: linear layers the WER gate keeps in float (node names of the pre-processed graph). With `work`,
    the pre-processed graph and the calibration ranges stay there (`prepared_path`), so a later call with more
    nodes kept skips calibration and the gate can compare tensors by name."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="edgeomni-whisper-q-") as tmp:
        # Node names are taken from the pre-processed graph that quantize_int8 will see (it pre-processes
        # again, which leaves an already optimised graph's names alone).
        # The encoder's free frame axis (positions sliced to min(1500, frames / 2)) needs ORT's symbolic shape
        # inference told that both are one length (auto_merge).
        prepared = prepared_path(int8, work) if work is not None else Path(tmp) / "prepared.onnx"
        if not prepared.is_file():
            quant_pre_process(str(fp32), str(prepared), auto_merge=True)
        excluded, kinds = float_nodes(prepared)
        ranges = prepared.with_suffix(".ranges.json") if work is not None else None
        settings = quantize_int8(prepared, int8, features, method=method, input_name="input_features",
                                 activations=activations, nodes_to_exclude=[*excluded, *keep_fp32],
                                 ranges_cache=ranges, progress=progress, auto_merge=True)
    settings["excluded_nodes"] = f"{len(excluded)} non-linear nodes kept float"
    settings["excluded_by_op"] = kinds
    settings["quantized_ops"] = list(WEIGHT_OPS)
    settings["calibration_clips"] = settings.pop("calibration_images")
    settings.pop("float_outputs", None)
    return settings


def prepared_path(int8: Path, work: Path) -> Path:
    """Where quantize_encoder keeps the pre-processed FP32 graph of the encoder it writes to `int8`."""
    return Path(work) / f"{Path(int8).stem}.prepared.onnx"


def quantize_decoder(fp32: Path, int8: Path, keep_fp32: Sequence[str] = ()) -> dict[str, Any]:
    """Dynamic INT8: int8 weights (the tied embedding/output table included), activations quantized per call.
    `keep_fp32`: MatMul nodes the WER gate keeps in float."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    Path(int8).parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=False,
                     nodes_to_exclude=list(keep_fp32))
    return {"format": "dynamic (QOperator: MatMulInteger, quantized Gather)", "weights": "int8 per-tensor",
            "activations": "uint8, quantized at run time"}

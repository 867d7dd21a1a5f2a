"""INT8 for models with variable-size inputs (PP-OCR det: any frame size; rec: any line width).

The shared quantizer (edgeomni.export.steps.quantize_int8) calibrates on one (N, C, H, W) array. OCR inputs cannot be
stacked, so the ranges are computed here one tensor at a time, on the same quant_pre_process'ed graph
quantize_int8 builds, and handed to it through its ranges cache: quantization itself stays in one place.
Sensitive nodes are ranked per input shape with gate_accuracy.sensitive_nodes and merged (worst SQNR).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from edgeomni.datasets.calibration_photos import tensor_stats
from edgeomni.errors import ExportError
from edgeomni.export.recipe import QuantizeSpec
from edgeomni.export.steps.gate_accuracy import sensitive_nodes
from edgeomni.export.steps.quantize_int8 import (
    ACTIVATIONS,
    METHODS,
    _calibrator_options,
    latency_ms,
    quantize_dynamic_int8,
    quantize_int8,
)


class TensorListReader(CalibrationDataReader):
    """Feeds (1, C, H, W) tensors of differing H/W to a calibrator, one at a time."""

    def __init__(self, input_name: str, tensors: list[np.ndarray]) -> None:
        self.input_name, self.tensors, self._index = input_name, tensors, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._index >= len(self.tensors):
            return None
        self._index += 1
        return {self.input_name: np.ascontiguousarray(self.tensors[self._index - 1], dtype=np.float32)}

    def rewind(self) -> None:
        self._index = 0


def ragged_stats(tensors: list[np.ndarray]) -> dict[str, Any]:
    """tensor_stats over inputs of several shapes (per channel over every pixel), plus the shapes seen."""
    channels = tensors[0].shape[1]
    pooled = np.concatenate([t.reshape(channels, -1) for t in tensors], axis=1)[None, :, None, :]
    stats = tensor_stats(pooled)
    shapes: dict[str, int] = {}
    for t in tensors:
        key = "x".join(str(d) for d in t.shape)
        shapes[key] = shapes.get(key, 0) + 1
    stats["shape"] = {"count": len(tensors), "shapes": dict(sorted(shapes.items(), key=lambda kv: -kv[1]))}
    return stats


def calibrate_ranges(fp32: Path, tensors: list[np.ndarray], input_name: str, spec: QuantizeSpec, cache: Path,
                     progress: Callable[[str], None]) -> None:
    """Activation ranges over `tensors`, written where quantize_int8(ranges_cache=...) reads them."""
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not tensors:
        raise ExportError(f"calibrating {fp32.name}: no calibration inputs (the calibration slides gave none)")
    started = time.perf_counter()
    prepared = prepared_path(fp32)
    # The graph quantize_int8 will quantize (same options), so the tensor names match the ranges cache; kept
    # beside the FP32 file because the sensitivity ranking compares tensors by these names too.
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    with tempfile.TemporaryDirectory(prefix="edgeomni-ocr-cal-") as tmp:
        symmetric = ACTIVATIONS[spec.activations][1]
        calibrator = create_calibrator(prepared, None, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=METHODS[spec.method],
                                       extra_options=_calibrator_options(spec.method, spec.percentile, symmetric))
        reader = TensorListReader(input_name, tensors)
        with contextlib.redirect_stdout(io.StringIO()):
            # One input per collect_data call: histogram calibrators merge as they go, so memory stays bounded.
            while (item := reader.get_next()) is not None:
                calibrator.collect_data(TensorListReader(input_name, [item[input_name]]))
            save_tensors_data(calibrator.compute_data(), cache)
        del calibrator
    progress(f"    calibration ranges ({spec.method}, {len(tensors)} inputs) {time.perf_counter() - started:.1f} s")


def prepared_path(fp32: Path) -> Path:
    return fp32.with_name(f"{fp32.stem}.prepared.onnx")


def quantize_component(fp32: Path, int8: Path, tensors: list[np.ndarray], input_name: str, spec: QuantizeSpec,
                       excluded: list[str], ranges_cache: Path, progress: Callable[[str], None],
                       dynamic_skip_ops: tuple[str, ...] = ()) -> dict[str, Any]:
    """Static QDQ (ranges from `tensors`, computed once and reused across exclusion rounds) or dynamic INT8."""

    if spec.mode == "dynamic":
        from onnxruntime.quantization.shape_inference import quant_pre_process

        # Conv+BN folded first: ORT's dynamic ConvInteger needs the Conv weights as plain initializers.
        prepared = prepared_path(fp32)
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        skipped = nodes_of_types(prepared, dynamic_skip_ops)
        try:
            settings = quantize_dynamic_int8(prepared, int8, [*excluded, *skipped], spec.per_channel)
        except ValueError as exc:  # ORT's quantizer reports unsupported graphs as ValueError
            raise ExportError(f"dynamic INT8 of {fp32.name} failed: {exc}") from None
        settings["excluded_nodes"] = list(excluded)
        if dynamic_skip_ops:
            settings["left_float_op_types"] = list(dynamic_skip_ops)
        return settings
    if not ranges_cache.is_file():
        calibrate_ranges(fp32, tensors, input_name, spec, ranges_cache, progress)
    settings = quantize_int8(fp32, int8, tensors[0], method=spec.method, percentile=spec.percentile,
                             activations=spec.activations, input_name=input_name, nodes_to_exclude=excluded,
                             ranges_cache=ranges_cache, skip_symbolic_shape=True, progress=progress)
    settings["calibration_images"] = len(tensors)
    settings["float_outputs"] = []
    return settings


def nodes_of_types(model: Path, op_types: tuple[str, ...]) -> list[str]:
    import onnx

    if not op_types:
        return []
    return [n.name for n in onnx.load(str(model), load_external_data=False).graph.node if n.op_type in op_types]


def ragged_sensitive_nodes(fp32: Path, int8: Path, tensors: list[np.ndarray], input_name: str, skip: set[str],
                           limit: int, per_shape: int = 3, shapes: int = 2) -> list[tuple[str, float]]:
    """gate.sensitive_nodes on the `shapes` most common input shapes (`per_shape` inputs each), merged by the
    worst SQNR a node reached on any of them. Compared with the pre-processed FP32 graph (calibrate_ranges
    wrote it): the QDQ graph's tensor names are that graph's, not the original's (Conv+BN fused etc.)."""

    groups: dict[tuple[int, ...], list[np.ndarray]] = {}
    for t in tensors:
        groups.setdefault(tuple(t.shape), []).append(t[0])
    worst: dict[str, float] = {}
    for group in sorted(groups.values(), key=len, reverse=True)[:shapes]:
        samples = np.stack(group[:per_shape])
        for node, sqnr in sensitive_nodes(prepared_path(fp32), int8, samples, input_name, skip, limit=limit * 4):
            worst[node] = min(sqnr, worst.get(node, np.inf))
    return sorted(worst.items(), key=lambda kv: kv[1])[:limit]


def latency(path: Path, tensors: list[np.ndarray], runs: int) -> dict[str, dict[str, float]]:
    """Median/p95 at 1 and 2 threads, cycling through representative inputs (batch 1)."""

    items = [t[0] for t in tensors]
    return {f"threads_{n}": latency_ms(path, items, threads=n, runs=runs, warmup=min(3, len(items)))
            for n in (1, 2)}

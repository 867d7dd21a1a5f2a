"""Static INT8 quantization (ONNX Runtime, QDQ) and an INT8-vs-FP32 comparison for classifiers."""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
from onnxruntime.quantization.shape_inference import quant_pre_process

from edgeomni.errors import ExportError
from edgeomni.export.progress import track

METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
           "percentile": CalibrationMethod.Percentile}
ACTIVATIONS = {"int8-symmetric": (QuantType.QInt8, True), "uint8-asymmetric": (QuantType.QUInt8, False)}
DEFAULT_PERCENTILE = 99.999
HISTOGRAM_BINS = 2048
# The KL search is a Python loop over candidate thresholds: 2048 bins took 62 s for 48 images, 512 a few.
ENTROPY_BINS = 512
# A calibrator keeps every intermediate tensor of what one collect_data call reads (Whisper's encoder: ~1.1 GB
# per clip, 18 GB for 16 clips). Passes are sized to stay under this; the histograms merge across passes, which
# is close but not identical to one pass (MobileNetV2 fits in one, as it always did).
CALIBRATION_PASS_BYTES = 3 * 1024**3


class ArrayCalibrationReader(CalibrationDataReader):
    """Feeds a preprocessed (N, C, H, W) array to the calibrator one image at a time."""

    def __init__(self, input_name: str, batch: np.ndarray) -> None:
        self.input_name = input_name
        self.batch = np.ascontiguousarray(batch, dtype=np.float32)
        self._index = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._index >= len(self.batch):
            return None
        item = self.batch[self._index : self._index + 1]
        self._index += 1
        return {self.input_name: item}

    def __len__(self) -> int:
        return len(self.batch)

    def rewind(self) -> None:
        self._index = 0


def _calibrator_options(method: str, percentile: float, symmetric: bool) -> dict[str, Any]:
    if method == "entropy":
        # quantize_static does not forward a bin count, and its entropy default (128 bins for 128
        # quantized bins) leaves a single candidate threshold: the full range, i.e. MinMax again.
        return {"num_bins": ENTROPY_BINS, "num_quantized_bins": 128}
    if method == "percentile":
        return {"num_bins": HISTOGRAM_BINS, "percentile": percentile, "symmetric": symmetric}
    return {}


def quantize_int8(
    fp32_path: Path,
    int8_path: Path,
    calibration: np.ndarray,
    *,
    method: str = "minmax",
    percentile: float = DEFAULT_PERCENTILE,
    activations: str = "int8-symmetric",
    input_name: str = "input",
    nodes_to_exclude: list[str] | None = None,
    ranges_cache: Path | None = None,
    skip_symbolic_shape: bool = False,  # OCR: PP-OCR's dynamic H/W defeat ORT's symbolic shapes
    auto_merge: bool = False,  # Whisper's free encoder window: min(1500, frames/2) and frames/2 are one length
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Write a static INT8 QDQ model; return the settings used (for the bundle report).

    Default: per-channel symmetric int8 weights and symmetric int8 activations, the QDQ form TensorRT
    and most NPUs accept, so one file serves both the CPU and an accelerator on the device.
    ``activations="uint8-asymmetric"`` gives the form ONNX Runtime's x86 CPU kernels run fastest
    (every Conv/Add fuses to an integer kernel; with int8 activations some stay float, see BENCHMARKS).
    """
    key = method.lower()
    if key not in METHODS:
        raise ExportError(f"calibration method {method!r}: expected one of {sorted(METHODS)}")
    if activations not in ACTIVATIONS:
        raise ExportError(f"activations {activations!r}: expected one of {sorted(ACTIVATIONS)}")
    activation_type, activation_symmetric = ACTIVATIONS[activations]
    if len(calibration) == 0:
        raise ExportError("INT8 calibration needs at least one image, got an empty calibration set")
    int8_path = Path(int8_path)
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgeomni-quant-") as tmp:
        prepared, cache = Path(tmp) / "prepared.onnx", Path(tmp) / "ranges.json"
        started = time.perf_counter()
        # Shape inference + graph optimisation first, as ORT recommends: quantizing an unoptimised
        # graph leaves Q/DQ pairs around ops that the optimiser would have fused away.
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=skip_symbolic_shape,
                          auto_merge=auto_merge)
        progress(f"    quant_pre_process {time.perf_counter() - started:.1f} s")

        started = time.perf_counter()
        if ranges_cache is not None and Path(ranges_cache).is_file():
            # Same model, same data, same method: only the excluded nodes changed, so the ranges still hold.
            shutil.copyfile(ranges_cache, cache)
            progress(f"    calibration ranges reused from {Path(ranges_cache).name}")
        else:
            # Ranges are computed here rather than inside quantize_static so every method gets its
            # options (see _calibrator_options); quantize_static then reads them from the cache file.
            calibrator = create_calibrator(prepared, None, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                           calibrate_method=METHODS[key],
                                           extra_options=_calibrator_options(key, percentile, activation_symmetric))
            quiet = contextlib.redirect_stdout  # silences the histogram calibrators' prints, not the progress bar
            per_pass = _inputs_per_pass(calibrator, input_name, calibration)
            chunks = range(0, len(calibration), per_pass)
            for start in track(chunks, len(chunks), f"calibrating ({key}, {per_pass} per pass)", progress):
                with quiet(io.StringIO()):
                    calibrator.collect_data(ArrayCalibrationReader(input_name, calibration[start : start + per_pass]))
            with quiet(io.StringIO()):
                save_tensors_data(calibrator.compute_data(), cache)
            del calibrator
            if ranges_cache is not None:
                shutil.copyfile(cache, ranges_cache)
            progress(f"    calibration ranges ({key}, {len(calibration)} images) {time.perf_counter() - started:.1f} s")

        started = time.perf_counter()
        quantize_static(
            str(prepared),
            str(int8_path),
            None,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=activation_type,
            weight_type=QuantType.QInt8,
            calibrate_method=METHODS[key],
            calibration_cache_path=cache,
            nodes_to_exclude=list(nodes_to_exclude or []),
            extra_options={
                "ActivationSymmetric": activation_symmetric,
                "WeightSymmetric": True,
                # The logits are a graph output read as float. Quantizing them clips confident
                # images' logits at the calibration maximum (13 vs 21 seen here), making top classes tie.
                "OpTypesToExcludeOutputQuantization": ["Gemm"],
            },
        )
        progress(f"    quantize_static QDQ {time.perf_counter() - started:.1f} s")
    return {
        "format": "QDQ",
        "per_channel": True,
        "weights": "int8 symmetric",
        "activations": activations.replace("-", " "),
        "calibration_method": key,
        **({"percentile": percentile} if key == "percentile" else {}),
        **({"histogram_bins": ENTROPY_BINS if key == "entropy" else HISTOGRAM_BINS} if key != "minmax" else {}),
        "calibration_images": len(calibration),
        "float_outputs": ["logits (Gemm output left unquantized)"],
        "excluded_nodes": list(nodes_to_exclude or []),
    }


def _inputs_per_pass(calibrator: Any, input_name: str, calibration: np.ndarray) -> int:
    """How many inputs one calibration pass may hold: one input's intermediate tensors, measured."""
    sample = np.ascontiguousarray(calibration[:1], dtype=np.float32)
    held = sum(out.nbytes for out in calibrator.infer_session.run(None, {input_name: sample}))
    return max(1, min(len(calibration), CALIBRATION_PASS_BYTES // max(1, held)))


def quantize_dynamic_int8(fp32_path: Path, int8_path: Path, nodes_to_exclude: list[str] | None = None,
                          per_channel: bool = True) -> dict[str, Any]:
    """Dynamic INT8 (weights INT8 ahead of time, activations quantized per call from their own range): for
    decoders and other autoregressive parts whose activations no calibration set can bound well."""
    from onnxruntime.quantization import quantize_dynamic

    Path(int8_path).parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8, per_channel=per_channel,
                     nodes_to_exclude=list(nodes_to_exclude or []))
    return {"format": "dynamic (QOperator MatMulInteger/ConvInteger)", "per_channel": per_channel,
            "weights": "int8 symmetric", "activations": "uint8, range per call",
            "excluded_nodes": list(nodes_to_exclude or [])}


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def latency_ms(path: Path, images: np.ndarray, *, threads: int, runs: int, warmup: int = 5) -> dict[str, float]:
    """Per-image latency (batch 1) over ``runs`` calls, cycling through ``images``: median, p95, mean."""
    session = _session(path, threads)
    name = session.get_inputs()[0].name
    for i in range(warmup):
        session.run(None, {name: images[i % len(images)][None]})
    times = np.empty(runs)
    for i in range(runs):
        item = images[i % len(images)][None]
        started = time.perf_counter()
        session.run(None, {name: item})
        times[i] = (time.perf_counter() - started) * 1000.0
    return {"median": round(float(np.median(times)), 3), "p95": round(float(np.percentile(times, 95)), 3),
            "mean": round(float(times.mean()), 3), "runs": runs}


def logits(path: Path, images: np.ndarray, threads: int = 2) -> np.ndarray:
    session = _session(path, threads)
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: images[i : i + 16]})[0] for i in range(0, len(images), 16)])


def compare_classifiers(
    fp32_path: Path,
    int8_path: Path,
    heldout: np.ndarray,
    *,
    threads: tuple[int, ...] = (1, 2),
    runs: int | None = None,
) -> dict[str, Any]:
    """How far the INT8 classifier is from the FP32 one on held-out images, and how much faster and smaller.

    Agreement with FP32 (not ImageNet accuracy) is measured because no labelled ImageNet images are
    available offline; it bounds the accuracy the quantization can have cost.
    """
    if len(heldout) == 0:
        raise ExportError("comparing INT8 with FP32 needs at least one held-out image")
    ref, got = logits(fp32_path, heldout), logits(int8_path, heldout)
    ref_top5 = np.argsort(-ref, axis=1)[:, :5]
    got_top5 = np.argsort(-got, axis=1)[:, :5]
    overlap = [len(set(a) & set(b)) / 5 for a, b in zip(ref_top5, got_top5, strict=True)]
    runs = runs or len(heldout)
    latency: dict[str, dict[str, dict[str, float]]] = {"fp32": {}, "int8": {}}
    for n in threads:
        latency["fp32"][f"threads_{n}"] = latency_ms(fp32_path, heldout, threads=n, runs=runs)
        latency["int8"][f"threads_{n}"] = latency_ms(int8_path, heldout, threads=n, runs=runs)
    fp32_size, int8_size = Path(fp32_path).stat().st_size, Path(int8_path).stat().st_size
    return {
        "heldout_images": len(heldout),
        "top1_agreement": round(float(np.mean(ref_top5[:, 0] == got_top5[:, 0])), 4),
        "top5_overlap": round(float(np.mean(overlap)), 4),
        "int8_top1_in_fp32_top5": round(float(np.mean([g[0] in r for g, r in zip(got_top5, ref_top5, strict=True)])),
                                        4),
        "mean_abs_logit_diff": round(float(np.mean(np.abs(ref - got))), 4),
        "max_abs_logit_diff": round(float(np.max(np.abs(ref - got))), 4),
        "size_bytes": {"fp32": fp32_size, "int8": int8_size},
        "size_ratio": round(fp32_size / int8_size, 2),
        "latency_ms": latency,
        "onnxruntime": ort.__version__,
    }

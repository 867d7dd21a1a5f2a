"""Quantization-aware fine-tuning (recipe step `finetune`): the torch mirror runs the QDQ model as ONNX Runtime
does, training lowers the distillation loss, and the written weights re-quantize to exactly the trained grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from edgeomni.datasets.calibration_photos import build_calibration_sets
from edgeomni.export.steps.finetune import FakeQuantGraph, FinetuneConfig, finetune_for_int8
from edgeomni.export.steps.quantize_int8 import logits, quantize_int8


@pytest.fixture(scope="module")
def quantized(default_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray, Path]:
    work = tmp_path_factory.mktemp("qat")
    fp32 = default_bundle / "labeller" / "mobilenet_v2_fp32.onnx"
    images = build_calibration_sets(calibration_count=24, heldout_count=1).calibration
    int8, ranges = work / "int8.onnx", work / "ranges.json"
    quantize_int8(fp32, int8, images, method="percentile", percentile=99.99, activations="uint8-asymmetric",
                  ranges_cache=ranges, progress=lambda _: None)
    return fp32, int8, images, ranges


def test_the_torch_mirror_computes_what_onnx_runtime_computes(quantized: tuple[Path, Path, np.ndarray, Path]) -> None:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32, int8, images, _ = quantized
    prepared = int8.with_name("prepared.onnx")
    quant_pre_process(str(fp32), str(prepared))
    mirror = FakeQuantGraph(onnx.load(str(prepared)), onnx.load(str(int8)))
    with torch.no_grad():
        ours = mirror(torch.from_numpy(images)).numpy()
    theirs = logits(int8, images)
    # Not bit-exact: ORT's fused integer kernels requantize in another order (int32 bias, fused Add), and one
    # rounding step that falls the other way early on moves the logits. ORT's own unfused QDQ run differs from
    # its fused one about as much; the mirror must be no further from the deployed model than that. Over all 24
    # images (8 alone swing by 0.1) the mirror is 1.08x ORT's own spread here and the FP32 model 1.70x: 1.35 keeps
    # a quarter of margin each way, for other CPUs' integer kernels.
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    unfused = ort.InferenceSession(str(int8), options, providers=["CPUExecutionProvider"])
    simulated = np.concatenate([unfused.run(None, {"input": images[i : i + 1]})[0] for i in range(len(images))])
    mirror_error = np.abs(ours - theirs).mean()
    ort_modes_error = np.abs(simulated - theirs).mean()
    assert mirror_error < 1.35 * ort_modes_error, (mirror_error, ort_modes_error)
    assert (ours.argmax(1) == theirs.argmax(1)).mean() >= (simulated.argmax(1) == theirs.argmax(1)).mean() - 1 / 8


@pytest.mark.slow
def test_finetuning_lowers_the_loss_and_the_int8_model_keeps_the_trained_weights(
        quantized: tuple[Path, Path, np.ndarray, Path], tmp_path: Path) -> None:
    fp32, int8, images, ranges = quantized
    tuned = tmp_path / "tuned.onnx"
    record = finetune_for_int8(fp32, int8, tuned, images, FinetuneConfig(steps=12, batch=8, lr=0.003, progress_every=6),
                               progress=lambda _: None)
    assert record["after"]["kl"] < record["before"]["kl"], record
    assert record["weights_changed"] > 0
    requantized = tmp_path / "requantized.onnx"
    quantize_int8(tuned, requantized, images, method="percentile", percentile=99.99, activations="uint8-asymmetric",
                  ranges_cache=ranges, progress=lambda _: None)
    # ORT must land on the very integers that were trained: same per-channel scales, and the moved weights moved.
    before = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(int8)).graph.initializer}
    after = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(requantized)).graph.initializer}
    weights = [n for n, v in after.items() if n.endswith("_quantized") and v.dtype == np.int8]
    assert len(weights) > 50
    assert all(np.array_equal(before[n.replace("_quantized", "_scale")], after[n.replace("_quantized", "_scale")])
               for n in weights)
    moved = sum(int((before[n] != after[n]).sum()) for n in weights)
    assert moved == record["weights_changed"], (moved, record["weights_changed"])
    got = logits(requantized, images)
    ref = logits(fp32, images)
    kl_before = _kl(ref, logits(int8, images))
    assert _kl(ref, got) < kl_before


def _kl(teacher: np.ndarray, student: np.ndarray) -> float:
    def log_softmax(x: np.ndarray) -> np.ndarray:
        x = x - x.max(1, keepdims=True)
        return x - np.log(np.exp(x).sum(1, keepdims=True))

    lt, ls = log_softmax(teacher), log_softmax(student)
    return float((np.exp(lt) * (lt - ls)).sum(1).mean())

"""Quantization-aware fine-tuning with knowledge distillation (QAT-KD) for static INT8 QDQ classifiers.

Recipe step `finetune` (image classifiers, static INT8). Round-to-nearest INT8 weights alone move MobileNetV2's
top-1 on 11% of the photos:heldout photos (activations on another 5%), so the INT8 model is fine-tuned to match
its FP32 teacher before ONNX Runtime quantizes it:

1. quantize the FP32 model once the usual way: the QDQ graph fixes *what* ORT quantizes and *how*
   (activation scales/zero points from calibration, per-channel weight scales, which tensors).
2. run the FP32 graph in torch with exactly those fake quantizers: activations use the QDQ model's scale
   and zero point, weights are learnable values in units of ORT's weight grid (scale = max|w| / 127 per
   output channel), rounded with a straight-through estimator.
3. minimise the KL divergence between the FP32 teacher's and the fake-quantized student's class
   distributions on the calibration inputs and augmented views of the *calibration* photos (never the
   held-out ones). Training needs varied photos: on 10 photos it fit them and moved nothing held out.
4. write the rounded weights (each channel's largest element kept, so ORT recomputes the same scale and
   lands exactly on the trained grid) into a copy of the FP32 graph; quantize_int8 then quantizes that
   copy with the same cached activation ranges, so the deployed model is the one that was trained.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch.nn import functional

from edgeomni.errors import ExportError
from edgeomni.export.steps.quantize_int8 import logits

SUPPORTED_OPS = ("Conv", "Clip", "Relu", "Add", "Mul", "GlobalAveragePool", "Flatten", "Gemm", "MaxPool",
                 "AveragePool", "Concat")
WEIGHT_QMAX = 127  # ORT's symmetric int8 weights use [-127, 127]: scale = 2 max|w| / 254 = max|w| / 127


@dataclass
class FinetuneConfig:
    steps: int = 300
    batch: int = 16
    lr: float = 0.02  # weights: grid steps per update (Adam); biases use lr * bias_lr_scale in their own units
    bias_lr_scale: float = 0.005
    temperature: float = 1.0
    seed: int = 1234
    progress_every: int = 25


class _RoundSTE(torch.autograd.Function):
    """round() forward, identity backward: the standard straight-through estimator of QAT."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # ctx: autograd signature
        return torch.round(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad


def _fake_quant(x: torch.Tensor, scale: float, zero_point: int, qmin: int, qmax: int) -> torch.Tensor:
    """QuantizeLinear + DequantizeLinear as ORT computes them (round half to even, saturate); STE inside the range."""
    q = torch.clamp(_RoundSTE.apply(x / scale) + zero_point, qmin, qmax)
    return (q - zero_point) * scale


@dataclass
class ActivationQuant:
    scale: float
    zero_point: int
    qmin: int
    qmax: int


class QuantizedWeight(torch.nn.Module):
    """A weight on ORT's per-channel int8 grid: learnable latent values in grid units, rounded with STE."""

    def __init__(self, weight: np.ndarray, scale: np.ndarray, axis: int) -> None:
        super().__init__()
        shape = [1] * weight.ndim
        shape[axis] = -1
        self.register_buffer("scale", torch.from_numpy(scale.astype(np.float32).reshape(shape)))
        self.register_buffer("original", torch.from_numpy(weight.astype(np.float32)))
        self.latent = torch.nn.Parameter(self.original / self.scale)
        # Each channel's largest |w| fixes ORT's scale; it stays exactly where it is (see export()).
        moved = np.moveaxis(np.abs(weight), axis, 0).reshape(weight.shape[axis], -1)
        pinned = np.zeros_like(moved, dtype=bool)
        pinned[np.arange(len(moved)), moved.argmax(axis=1)] = True
        self.register_buffer("pinned", torch.from_numpy(np.moveaxis(pinned.reshape(
            np.moveaxis(weight, axis, 0).shape), 0, axis).copy()))
        self.register_buffer("absmax", torch.from_numpy(moved.max(axis=1).astype(np.float32).reshape(shape)))

    def forward(self) -> torch.Tensor:
        return torch.clamp(_RoundSTE.apply(self.latent), -WEIGHT_QMAX, WEIGHT_QMAX) * self.scale

    @torch.no_grad()
    def keep_on_grid(self) -> None:
        """After each update: pinned maxima back in place, everything else inside the int8 range."""
        self.latent.clamp_(-WEIGHT_QMAX, WEIGHT_QMAX)
        self.latent[self.pinned] = (self.original / self.scale)[self.pinned]

    @torch.no_grad()
    def export(self) -> np.ndarray:
        """Float weights that ORT re-quantizes to exactly the trained integers with the same scale."""
        q = torch.clamp(torch.round(self.latent), -WEIGHT_QMAX, WEIGHT_QMAX)
        # 127 * scale can differ from max|w| in the last bit: at +-127 use max|w| itself, so no element exceeds
        # the channel's maximum and ORT recomputes the very same scale.
        values = torch.where(q.abs() == WEIGHT_QMAX, torch.sign(q) * self.absmax, q * self.scale)
        return torch.where(self.pinned, self.original, values).numpy().astype(np.float32)

    @torch.no_grad()
    def changed(self) -> int:
        return int((torch.round(self.latent) != torch.round(self.original / self.scale)).sum())


class FakeQuantGraph(torch.nn.Module):
    """An FP32 ONNX graph run in torch with ORT's fake quantizers at the tensors its QDQ twin quantizes."""

    def __init__(self, fp32: onnx.ModelProto, qdq: onnx.ModelProto) -> None:
        super().__init__()
        self.graph = fp32.graph
        self.constants = {i.name: numpy_helper.to_array(i) for i in fp32.graph.initializer}
        # Converted once (and copied: ONNX's arrays are read-only, which torch warns about on every use).
        self._constant_tensors = {name: torch.from_numpy(np.array(value)) for name, value in self.constants.items()}
        self.activations, weight_grids = _qdq_parameters(qdq)
        self.weights = torch.nn.ModuleDict()
        self.biases = torch.nn.ParameterDict()
        self.weight_names: dict[str, str] = {}  # module key -> initializer name
        self.bias_names: dict[str, str] = {}
        for node in self.graph.node:
            if node.op_type not in SUPPORTED_OPS:
                raise ExportError(f"quantization-aware fine-tuning: node {node.name!r} is a {node.op_type}, "
                                  f"supported ops are {list(SUPPORTED_OPS)}")
            if node.op_type in ("Conv", "Gemm") and node.input[1] in weight_grids:
                key = f"w{len(self.weights)}"
                scale, axis = weight_grids[node.input[1]]
                self.weights[key] = QuantizedWeight(self.constants[node.input[1]], scale, axis)
                self.weight_names[key] = node.input[1]
                if len(node.input) > 2 and node.input[2] in self.constants:
                    self.biases[key] = torch.nn.Parameter(torch.from_numpy(self.constants[node.input[2]].copy()))
                    self.bias_names[key] = node.input[2]
        self._weight_key = {name: key for key, name in self.weight_names.items()}
        missing = [t for t in self.activations if not self._produced(t)]
        if missing:
            raise ExportError(f"quantization-aware fine-tuning: the QDQ model quantizes {missing[:3]} which the "
                              f"FP32 graph does not produce (were they quantized from different files?)")
        self.quantize = True

    def _produced(self, tensor: str) -> bool:
        return tensor in {i.name for i in self.graph.input} or any(tensor in n.output for n in self.graph.node)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: dict[str, torch.Tensor] = {}
        self._store(values, self.graph.input[0].name, x)
        for node in self.graph.node:
            args = [values[i] if i in values else self._constant_tensors[i] for i in node.input if i]
            key = self._weight_key.get(node.input[1]) if node.op_type in ("Conv", "Gemm") else None
            if key is not None:
                args[1] = self.weights[key]()
                if key in self.biases:
                    args[2] = self.biases[key]
            self._store(values, node.output[0], _run_op(node, args))
        return values[self.graph.output[0].name]

    def _store(self, values: dict[str, torch.Tensor], name: str, tensor: torch.Tensor) -> None:
        spec = self.activations.get(name)
        if spec is not None and self.quantize:
            tensor = _fake_quant(tensor, spec.scale, spec.zero_point, spec.qmin, spec.qmax)
        values[name] = tensor

    def keep_on_grid(self) -> None:
        for weight in self.weights.values():
            weight.keep_on_grid()

    def write(self, fp32: onnx.ModelProto, out: Path) -> None:
        """The FP32 graph with the trained weights and biases, ready for quantize_int8."""
        trained = {self.weight_names[k]: w.export() for k, w in self.weights.items()}
        trained.update({self.bias_names[k]: b.detach().numpy().astype(np.float32) for k, b in self.biases.items()})
        for init in fp32.graph.initializer:
            if init.name in trained:
                init.CopyFrom(numpy_helper.from_array(trained[init.name], init.name))
        onnx.save(fp32, str(out))


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _run_op(node: onnx.NodeProto, args: list[torch.Tensor]) -> torch.Tensor:
    op = node.op_type
    if op == "Conv":
        pads = _attr(node, "pads", [0, 0, 0, 0])
        if pads[:2] != pads[2:]:
            raise ExportError(f"quantization-aware fine-tuning: Conv {node.name!r} has asymmetric pads {pads}")
        return functional.conv2d(args[0], args[1], args[2] if len(args) > 2 else None, _attr(node, "strides", 1),
                                 pads[:2], _attr(node, "dilations", 1), _attr(node, "group", 1))
    if op == "Clip":
        low = float(args[1]) if len(args) > 1 else None
        high = float(args[2]) if len(args) > 2 else None
        return torch.clamp(args[0], low, high)
    if op == "Relu":
        return torch.relu(args[0])
    if op in ("Add", "Mul"):
        return args[0] + args[1] if op == "Add" else args[0] * args[1]
    if op == "GlobalAveragePool":
        return args[0].mean(dim=(2, 3), keepdim=True)
    if op == "Flatten":
        return torch.flatten(args[0], _attr(node, "axis", 1))
    if op == "Gemm":
        a = args[0].t() if _attr(node, "transA", 0) else args[0]
        b = args[1].t() if _attr(node, "transB", 0) else args[1]
        out = _attr(node, "alpha", 1.0) * (a @ b)
        return out + _attr(node, "beta", 1.0) * args[2] if len(args) > 2 else out
    if op in ("MaxPool", "AveragePool"):
        kernel, stride = _attr(node, "kernel_shape", None), _attr(node, "strides", 1)
        pads = _attr(node, "pads", [0, 0, 0, 0])[:2]
        pool = functional.max_pool2d if op == "MaxPool" else functional.avg_pool2d
        return pool(args[0], kernel, stride, pads)
    return torch.cat(args, dim=_attr(node, "axis", 1))  # Concat


def _qdq_parameters(qdq: onnx.ModelProto) -> tuple[dict[str, ActivationQuant], dict[str, tuple[np.ndarray, int]]]:
    """What ORT quantized: activation tensor -> fixed fake quantizer; weight -> (per-channel scale, axis)."""
    consts = {i.name: numpy_helper.to_array(i) for i in qdq.graph.initializer}
    activations: dict[str, ActivationQuant] = {}
    weights: dict[str, tuple[np.ndarray, int]] = {}
    for node in qdq.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in consts:
            zero = consts[node.input[2]]
            info = np.iinfo(zero.dtype)
            activations[node.input[0]] = ActivationQuant(float(consts[node.input[1]]), int(zero), int(info.min),
                                                         int(info.max))
        elif (node.op_type == "DequantizeLinear" and node.input[0] in consts and consts[node.input[0]].dtype == np.int8
              and node.input[0].endswith("_quantized")):
            zero = consts[node.input[2]]
            if np.any(zero != 0):
                raise ExportError(f"quantization-aware fine-tuning expects symmetric weights; {node.input[0]} "
                                  f"has non-zero zero points")
            weights[node.input[0].removesuffix("_quantized")] = (consts[node.input[1]], _attr(node, "axis", 1))
    return activations, weights


def _distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    log_student = functional.log_softmax(student / temperature, dim=1)
    log_teacher = functional.log_softmax(teacher / temperature, dim=1)
    return functional.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean") * temperature**2


@torch.no_grad()
def _evaluate(model: FakeQuantGraph, images: torch.Tensor, teacher: torch.Tensor) -> dict[str, float]:
    student = torch.cat([model(images[i : i + 32]) for i in range(0, len(images), 32)])
    return {"kl": round(float(_distillation_loss(student, teacher, 1.0)), 5),
            "top1_agreement": round(float((student.argmax(1) == teacher.argmax(1)).float().mean()), 4),
            "mean_abs_logit_diff": round(float((student - teacher).abs().mean()), 4)}


def finetune_for_int8(fp32_path: Path, qdq_path: Path, out_path: Path, images: np.ndarray, config: FinetuneConfig,
                      progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Fine-tune the weights of ``fp32_path`` for the quantization ``qdq_path`` applies; write them to ``out_path``.

    ``images`` are calibration-side inputs (N, C, H, W); the FP32 model's own outputs are the targets, so no
    labels are needed. Returns the report: layers, steps, the error before/after on a fixed subset, seconds.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(images) < config.batch:
        raise ExportError(f"finetune: {len(images)} training images, fewer than one batch ({config.batch})")
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    teacher = torch.from_numpy(logits(fp32_path, images))  # the FP32 model as ORT runs it: the target
    with tempfile.TemporaryDirectory(prefix="edgeomni-qat-") as tmp:
        # The graph quantize_static sees (constants folded, names as in the QDQ model), not the raw export.
        quant_pre_process(str(fp32_path), str(Path(tmp) / "prepared.onnx"))
        fp32 = onnx.load(str(Path(tmp) / "prepared.onnx"))
    model = FakeQuantGraph(fp32, onnx.load(str(qdq_path)))
    inputs = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    probe = rng.choice(len(images), size=min(64, len(images)), replace=False)
    before = _evaluate(model, inputs[probe], teacher[probe])
    progress(f"    QAT-KD: {len(model.weights)} quantized layers, {len(model.activations)} activation quantizers, "
             f"{len(images)} training images; before: KL {before['kl']}, top-1 agreement {before['top1_agreement']}")
    latents = [w.latent for w in model.weights.values()]
    optimizer = torch.optim.Adam([{"params": latents, "lr": config.lr},
                                  {"params": list(model.biases.values()), "lr": config.lr * config.bias_lr_scale}])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.steps)
    losses: list[float] = []
    for step in range(1, config.steps + 1):
        batch = rng.choice(len(images), size=config.batch, replace=False)
        loss = _distillation_loss(model(inputs[batch]), teacher[batch], config.temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        model.keep_on_grid()
        losses.append(float(loss.detach()))
        if step % config.progress_every == 0 or step == config.steps:
            progress(f"    QAT-KD step {step}/{config.steps}: KL {np.mean(losses[-config.progress_every:]):.4f} "
                     f"({time.perf_counter() - started:.0f} s)")
    after = _evaluate(model, inputs[probe], teacher[probe])
    model.write(fp32, out_path)
    changed = sum(w.changed() for w in model.weights.values())
    total = sum(w.latent.numel() for w in model.weights.values())
    progress(f"    QAT-KD after: KL {after['kl']}, top-1 agreement {after['top1_agreement']}; "
             f"{changed} of {total} weights moved to another grid point")
    return {"method": "qat-kd", "layers": len(model.weights), "activation_quantizers": len(model.activations),
            "training_images": len(images), "steps": config.steps, "batch": config.batch, "lr": config.lr,
            "temperature": config.temperature, "seed": config.seed, "weights_changed": changed,
            "weights_total": total, "probe_images": len(probe), "before": before, "after": after,
            "seconds": round(time.perf_counter() - started, 1)}

"""The `tensorrt` export target for one model: what a GPU device gets beside the CPU bundle's ONNX.

Two files, both from the same source (the static INT8 model quantized again with symmetric int8 activations,
or an FP32 model): a serialized engine, built only where TensorRT and a GPU exist and tied to that TensorRT
release and GPU; and the source in the form TensorRT's ONNX parser takes (`tensorrt_form`: float biases), which
onnxruntime's TensorRT EP turns into an engine on whatever GPU the bundle lands on. The second is written
everywhere, so a bundle exported on a CPU-only workstation still runs INT8 on a Jetson's TensorRT.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from edgeomni.bundle.describe import describe_file
from edgeomni.bundle.manifest import Component
from edgeomni.errors import ExportError
from edgeomni.export.steps.tensorrt_engine import TensorRtSettings, build_target, engine_precision, tensorrt_form

# Scores a model file on the recipe's held-out set: {"summary": str, "passed": bool, ...figures}.
Gate = Callable[[Path], dict[str, Any]]
EP_NOTE = "onnxruntime's TensorRT EP builds its engine from this on the device's GPU (and caches it)"


@dataclass(frozen=True)
class TensorRtTarget:
    """What the target made for one model: the engine (or None, and why in `record['status']`), the ONNX for the
    TensorRT EP (None where the shipped ONNX already is that form), and the record for the report."""

    engine: Path | None
    ep_onnx: Path | None
    record: dict[str, Any]


def build_tensorrt_target(source: Path, shipped: Path, work: Path, stem: str, settings: TensorRtSettings,
                          say: Callable[[str], None], gate: Gate | None = None,
                          fp32: Path | None = None) -> TensorRtTarget:
    """`source`: the model TensorRT should run; `shipped`: the ONNX the bundle already carries for this role.
    `gate` scores the TensorRT form on the recipe's held-out set (onnxruntime runs the same Q/DQ graph): it is
    another model than the gated CPU one (symmetric int8 activations, a 7-bit grid for non-negative tensors).
    A copy that fails is not shipped and no engine is built from it: the target falls back to `fp32` as FP16
    where given (what TensorRT runs fast without INT8), else ships nothing; the report says which and why."""
    try:
        model, folded = tensorrt_form(source)
    except ExportError as exc:
        return _not_built(str(exc), settings, say, source)
    ep_onnx = None
    verdict: dict[str, Any] | None = None
    if source != shipped or folded:
        ep_onnx = work / f"{stem}.tensorrt.onnx"
        ep_onnx.write_bytes(model)
        if gate is not None:  # (the shipped ONNX itself was gated already)
            verdict = gate(ep_onnx)
            say(f"    {ep_onnx.name} on the held-out set: {verdict['summary']}")
    if verdict is not None and not verdict["passed"]:
        failed = f"its symmetric INT8 form fails the accuracy gate: {verdict['summary']}"
        if fp32 is None:
            target = _not_built(failed, settings, say, source)
        else:
            say(f"    {failed}; building from the FP32 model as FP16 instead")
            target = build_tensorrt_target(fp32, shipped, work, stem, replace(settings, int8=False), say)
            target.record["fallback"] = f"FP16 from FP32: {failed}"
        target.record["gate"] = verdict
        return target
    # The engine is built from the very file the EP gets (TensorRT's form already: nothing left to fold).
    engine, record = build_target(ep_onnx or source, work / f"{stem}.engine", settings, say)
    if "float_biases" in record:
        record["float_biases"] = folded
    record["from"] = f"{'static INT8 QDQ' if settings.int8 else 'FP32 ONNX, FP16 engine'} ({source.name})"
    if verdict is not None:
        record["gate"] = verdict
    record["ep_onnx"] = {"file": (ep_onnx or shipped).name, "float_biases": folded, "note": EP_NOTE}
    return TensorRtTarget(engine, ep_onnx, record)


def describe(record: dict[str, Any]) -> str:
    """One line for the report's targets: the engine's status, then what the TensorRT EP gets and its gate."""
    ep, gate = record.get("ep_onnx"), record.get("gate")
    if not ep:
        return str(record["status"])
    why = record.get("fallback") or (gate or {}).get("summary")
    return f"{record['status']}, onnxruntime's TensorRT EP: {ep['file']}" + (f" ({why})" if why else "")


def _not_built(why: str, settings: TensorRtSettings, say: Callable[[str], None], source: Path) -> TensorRtTarget:
    say(f"    {source.name}: not built: {why}")
    return TensorRtTarget(None, None, {"status": f"not built: {why}", "int8": settings.int8, "fp16": settings.fp16,
                                       "profiles": [asdict(p) for p in settings.profiles]})


def target_components(staging: Path, folder: str, target: TensorRtTarget, *, name: str, role: str, license: str,
                       provenance: dict[str, Any], preprocess: dict[str, Any]) -> list[Component]:
    """Copy the target's files into the bundle's `folder` and describe them: `<role>-tensorrt` for the engine,
    `<role>-tensorrt-onnx` for the EP's model (with the export's profiles, which the runtime hands the EP)."""

    components = []
    common = {"license": license, "provenance": provenance, "preprocess": preprocess}
    if target.engine is not None:  # tied to one TensorRT version and GPU: recorded in its report
        shutil.copyfile(target.engine, staging / folder / target.engine.name)
        components.append(describe_file(staging, f"{folder}/{target.engine.name}", name=f"{name}_tensorrt",
                                        role=f"{role}-tensorrt", precision=engine_precision(target.record),
                                        report=target.record, **common))
    if target.ep_onnx is not None:
        shutil.copyfile(target.ep_onnx, staging / folder / target.ep_onnx.name)
        report = {"for": EP_NOTE, "from": target.record.get("from", ""), "profiles": target.record["profiles"],
                  "float_biases": target.record["ep_onnx"]["float_biases"], "gate": target.record.get("gate")}
        components.append(describe_file(staging, f"{folder}/{target.ep_onnx.name}", name=f"{name}_tensorrt_onnx",
                                        role=f"{role}-tensorrt-onnx",
                                        precision="int8" if target.record.get("int8") else "fp32",
                                        report=report, **common))
    return components

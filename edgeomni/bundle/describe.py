"""Make manifest entries from files: hash them and read their input/output signature."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnxruntime as ort

from edgeomni.bundle.manifest import Component, StateSpec, TensorSpec
from edgeomni.bundle.verify import sha256_of

_ORT_TYPES = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(bool)": "bool",
              "tensor(float16)": "float16", "tensor(int32)": "int32", "tensor(uint8)": "uint8",
              "tensor(int8)": "int8"}


def engine_signature(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Read an ONNX/ORT engine's inputs and outputs as ONNX Runtime sees them."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def spec(arg: Any) -> TensorSpec:
        shape = [d if isinstance(d, int) else (d or "?") for d in (arg.shape or [])]
        return TensorSpec(name=arg.name, shape=shape, dtype=_ORT_TYPES.get(arg.type, arg.type))

    return [spec(a) for a in session.get_inputs()], [spec(a) for a in session.get_outputs()]


def describe_file(
    bundle_dir: Path,
    relpath: str,
    *,
    name: str,
    role: str,
    precision: str,
    license: str,
    provenance: dict[str, Any],
    state: list[StateSpec] | None = None,
    preprocess: dict[str, Any] | None = None,
    report: dict[str, Any] | None = None,
) -> Component:
    path = bundle_dir / relpath
    suffix = path.suffix.lstrip(".")
    fmt = {"onnx": "onnx", "ort": "ort", "engine": "tensorrt", "plan": "tensorrt"}.get(suffix, suffix)
    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    if fmt in ("onnx", "ort"):
        inputs, outputs = engine_signature(path)
    elif fmt == "tensorrt" and report:  # read without TensorRT: the build record lists the engine's tensors
        inputs = [TensorSpec.from_dict(t, f"{relpath} inputs") for t in report.get("inputs", [])]
        outputs = [TensorSpec.from_dict(t, f"{relpath} outputs") for t in report.get("outputs", [])]
    return Component(
        name=name,
        role=role,
        file=relpath,
        sha256=sha256_of(path),
        size=path.stat().st_size,
        format=fmt,
        precision=precision,
        license=license,
        provenance=provenance,
        inputs=inputs,
        outputs=outputs,
        state=state or [],
        preprocess=preprocess or {},
        report=report or {},
    )

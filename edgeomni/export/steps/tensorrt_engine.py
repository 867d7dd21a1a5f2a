"""The `tensorrt` export target: a serialized TensorRT engine built from the QDQ ONNX model.

Explicit quantization: the Q/DQ nodes of the INT8 ONNX decide what runs in INT8 (TensorRT does not
calibrate again); on TensorRT 10, layers without Q/DQ may fall back to FP16 (TensorRT 11 builds strongly
typed networks only: they keep their ONNX type, FP32, and the record says `typing: strong`, `fp16: false`).
Dynamic input dimensions get one optimisation profile (min/opt/max). A timing cache next to the output
makes rebuilds fast. The engine is tied to the TensorRT version and the GPU it was built on, so both are
recorded with it. tests/test_tensorrt_simulated.py runs this against the real Python API of each supported
release (10.3, 10.16, 11.4) on a simulated GPU.

TensorRT cannot be installed on every machine (its GPU libraries come from NVIDIA's own index): where the
`tensorrt` module is missing, `build_engine` raises ExportError with that reason and the rest of the
export goes on (the runner reports the target as not built).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeomni.engines.tensorrt_runner import BackendUnavailable, gpu_identity
from edgeomni.errors import ExportError


@dataclass(frozen=True)
class Profile:
    """One optimisation profile for one input: the shapes TensorRT must accept and the one it tunes for."""

    input: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass
class TensorRtSettings:
    fp16: bool = True  # layers left without Q/DQ may run in FP16
    int8: bool = True  # honour the Q/DQ nodes (explicit quantization)
    workspace_mb: int = 1024
    max_batch: int = 8
    timing_cache: str = "timing.cache"
    profiles: list[Profile] = field(default_factory=list)

    def validate(self) -> None:
        if not 16 <= self.workspace_mb <= 65_536:
            raise ExportError(f"tensorrt.workspace_mb: expected 16..65536, got {self.workspace_mb}")
        if not 1 <= self.max_batch <= 1024:
            raise ExportError(f"tensorrt.max_batch: expected 1..1024, got {self.max_batch}")
        for p in self.profiles:
            if not (len(p.min) == len(p.opt) == len(p.max)):
                raise ExportError(f"tensorrt profile for {p.input!r}: min/opt/max ranks differ ({p})")
            if not all(a <= b <= c for a, b, c in zip(p.min, p.opt, p.max, strict=True)):
                raise ExportError(f"tensorrt profile for {p.input!r}: expected min <= opt <= max per dimension, "
                                  f"got {p}")


def profile_for(input_name: str, shape: list[int | str | None], example: list[int], max_batch: int) -> Profile:
    """Min/opt/max shapes for one input: symbolic (or None) dims take the example's size; the batch (first)
    dimension, when symbolic, ranges 1..max_batch and is tuned for 1 (a live stream sends one item)."""
    if len(shape) != len(example):
        raise ExportError(f"input {input_name!r}: model rank {len(shape)} != example rank {len(example)}")
    fixed = [d if isinstance(d, int) and d > 0 else None for d in shape]
    for i, (dim, want) in enumerate(zip(fixed, example, strict=True)):
        if dim is not None and dim != want:
            raise ExportError(f"input {input_name!r}: dimension {i} is {dim} in the model, {want} in the example")
    low = tuple(d if d is not None else (1 if i == 0 else e) for i, (d, e) in enumerate(zip(fixed, example,
                                                                                             strict=True)))
    high = tuple(d if d is not None else (max_batch if i == 0 else e) for i, (d, e) in enumerate(zip(fixed, example,
                                                                                                   strict=True)))
    return Profile(input_name, low, low, high)


def profile_for_range(input_name: str, shape: list[int | str | None], examples: list[tuple[int, ...]],
                      bounds: dict[int, tuple[int, int]]) -> Profile:
    """Min/opt/max for an input whose sizes vary per call (an OCR crop's width, a Whisper window): each dynamic
    dimension spans `bounds[axis]` (everything the runtime's pre-processing can produce, so no live input falls
    outside the engine) and is tuned for the median of the `examples` (calibration inputs of that pre-processing).
    Fixed dimensions must match every example."""
    if not examples:
        raise ExportError(f"input {input_name!r}: no example inputs to size a TensorRT profile from")
    fixed = [d if isinstance(d, int) and d > 0 else None for d in shape]
    per_axis: list[tuple[int, int, int]] = []
    for axis, dim in enumerate(fixed):
        seen = sorted(int(e[axis]) for e in examples if len(e) == len(fixed))
        if len(seen) != len(examples):
            raise ExportError(f"input {input_name!r}: model rank {len(fixed)}, an example has another")
        if dim is not None:
            if seen[0] != dim or seen[-1] != dim:
                raise ExportError(f"input {input_name!r}: dimension {axis} is {dim} in the model, "
                                  f"{seen[0]}..{seen[-1]} in the examples")
            per_axis.append((dim, dim, dim))
            continue
        lo, hi = bounds.get(axis, (seen[0], seen[-1]))
        if not 1 <= lo <= hi:
            raise ExportError(f"input {input_name!r}: bounds of dimension {axis}: expected 1 <= min <= max, "
                              f"got {lo}..{hi}")
        per_axis.append((lo, min(hi, max(lo, seen[len(seen) // 2])), hi))
    low, opt, high = (tuple(column) for column in zip(*per_axis, strict=True))
    return Profile(input_name, low, opt, high)


def model_input_dims(onnx_path: Path) -> dict[str, list[int | str | None]]:
    """Each graph input's dimensions: ints where fixed, the symbol (or None) where dynamic."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return {i.name: [d.dim_value or d.dim_param or None for d in i.type.tensor_type.shape.dim] for i in graph.input}


def tensorrt_form(onnx_path: Path) -> tuple[bytes, int]:
    """The QDQ model as TensorRT's ONNX parser takes it, and how many biases were turned back to float.

    ONNX Runtime quantizes a Conv/Gemm bias to int32 behind a DequantizeLinear (its CPU kernels add it in the
    int32 accumulator); TensorRT's dequantize runs only from int8/fp8/int4 and refuses that node ("only
    activation types allowed as input to this layer"), and it fuses a float bias into its int8 kernels itself.
    Each such bias becomes the float constant it stands for. TensorRT also takes only symmetric Q/DQ: a
    uint8 or non-zero zero point is refused here, naming the node (quantize with int8-symmetric activations)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, numpy_helper

    try:
        model = onnx.load(str(onnx_path))
    except Exception as exc:  # protobuf's DecodeError and friends: the file is not an ONNX model
        raise ExportError(f"target tensorrt: {Path(onnx_path).name} is not a readable ONNX model "
                          f"({type(exc).__name__}: {exc})") from None
    graph = model.graph
    constants = {i.name: i for i in graph.initializer}
    folded: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        zero_point = constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        source = constants.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if source is not None and source.data_type == TensorProto.INT32:
            folded.append(node)
            continue
        if zero_point is not None:
            values = numpy_helper.to_array(zero_point)
            if values.dtype != np.int8 or values.any():
                raise ExportError(f"target tensorrt: {Path(onnx_path).name}: node {node.name or node.output[0]!r} "
                                  f"has a {values.dtype} zero point {values.ravel()[:4].tolist()}; TensorRT takes "
                                  f"only symmetric int8 Q/DQ (quantize with activations int8-symmetric)")
    for node in folded:
        quantized = numpy_helper.to_array(constants[node.input[0]]).astype(np.float64)
        scale = numpy_helper.to_array(constants[node.input[1]]).astype(np.float64)
        offset = numpy_helper.to_array(constants[node.input[2]]).astype(np.float64) if len(node.input) > 2 and \
            node.input[2] else 0.0
        graph.initializer.append(numpy_helper.from_array(((quantized - offset) * scale).astype(np.float32),
                                                         node.output[0]))
        graph.node.remove(node)
    used = {name for node in graph.node for name in node.input} | {v.name for v in (*graph.input, *graph.output)}
    for initializer in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(initializer)
    return model.SerializeToString(), len(folded)


def build_target(onnx_path: Path, out: Path, settings: TensorRtSettings,
                 say: Callable[[str], None]) -> tuple[Path | None, dict[str, Any]]:
    """Build one engine where TensorRT is installed; elsewhere (or when the build fails) return no engine and
    the reason, so the report says it and the rest of the export goes on."""
    try:
        record = build_engine(onnx_path, out, settings, say)
    except ExportError as exc:
        say(f"    {Path(onnx_path).name}: not built: {exc}")
        return None, {"status": f"not built: {exc}", "profiles": [asdict(p) for p in settings.profiles],
                      "fp16": settings.fp16, "int8": settings.int8}
    say(f"    {out.name}: TensorRT {record['tensorrt']} on {record['gpu']}")
    return out, {"status": f"built: TensorRT {record['tensorrt']} on {record['gpu']}", **record}


def engine_precision(record: dict[str, Any]) -> str:
    """The manifest precision of a built engine: int8 (Q/DQ honoured), else fp16 where the build allowed it, else
    fp32 (a TensorRT 11 engine of an FP32 graph: strongly typed, no FP16 fallback)."""
    return "int8" if record.get("int8") else "fp16" if record.get("fp16") else "fp32"


def available() -> str | None:
    """The TensorRT version if its Python package imports here, else None."""
    try:
        import tensorrt
    except ImportError:
        return None
    return str(tensorrt.__version__)


class BuildProgress:
    """TensorRT's build phases as progress lines: each top-level phase's start and end, and at most one line per
    `every_s` seconds from the steps in between (an engine build can run for minutes). Plain Python, so it is
    tested without TensorRT; `_monitor` hands it to TensorRT as an IProgressMonitor."""

    def __init__(self, say: Callable[[str], None], name: str, every_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.say, self.name, self.every_s, self.clock = say, name, every_s, clock
        self._phases: dict[str, tuple[int, float, str | None]] = {}  # phase -> (steps, started, parent)
        self._last_line = clock()

    def phase_start(self, phase: str, parent: str | None, steps: int) -> None:
        self._phases[phase] = (steps, self.clock(), parent)
        if parent is None:
            self.say(f"    {self.name}: {phase} ({steps} steps)")

    def step_complete(self, phase: str, step: int) -> bool:
        now = self.clock()
        if now - self._last_line >= self.every_s:
            self._last_line = now
            steps, started, parent = self._phases.get(phase, (0, now, None))
            where = phase if parent is None else f"{parent} > {phase}"
            self.say(f"    {self.name}: {where} {step + 1}/{steps}, {now - started:.0f} s")
        return True  # (False would cancel the build)

    def phase_finish(self, phase: str) -> None:
        _steps, started, parent = self._phases.pop(phase, (0, self.clock(), None))
        if parent is None:
            self.say(f"    {self.name}: {phase} done in {self.clock() - started:.1f} s")


def _monitor(trt: Any, progress: BuildProgress) -> Any:
    """`progress` as a trt.IProgressMonitor (TensorRT calls it from the build, with these argument names)."""

    class Monitor(trt.IProgressMonitor):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)  # TensorRT's bindings want the base initialised explicitly

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            progress.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return progress.step_complete(phase_name, step)

        def phase_finish(self, phase_name: str) -> None:
            progress.phase_finish(phase_name)

    return Monitor()


def build_engine(onnx_path: Path, out: Path, settings: TensorRtSettings,
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Build and serialize an engine; returns what to record with it (versions, GPU, profiles, flags).
    `progress` gets the build's phases (TensorRT 10's progress monitor)."""
    settings.validate()
    try:
        import tensorrt as trt
    except ImportError:
        raise ExportError("target tensorrt: the TensorRT Python package is not installed on this machine "
                          "(pip install tensorrt from NVIDIA's index, on a machine with an NVIDIA GPU); "
                          "the ONNX targets are unaffected") from None
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # TensorRT 10 builds "weakly typed" networks: Q/DQ nodes give INT8, builder flags allow FP16 elsewhere.
    # TensorRT 11 removed those flags: networks are strongly typed, every layer runs in its ONNX type.
    weakly_typed = hasattr(trt.BuilderFlag, "INT8")
    network = builder.create_network(0 if weakly_typed else
                                     1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    model, folded = tensorrt_form(Path(onnx_path))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"target tensorrt: TensorRT cannot parse {Path(onnx_path).name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mb << 20)
    fp16 = settings.fp16 and weakly_typed
    if weakly_typed and settings.int8:
        config.set_flag(trt.BuilderFlag.INT8)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    cache_path = Path(out).with_name(settings.timing_cache)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    if settings.profiles:  # a profile with no shapes is invalid (add_optimization_profile refuses it)
        profile = builder.create_optimization_profile()
        for p in settings.profiles:
            profile.set_shape(p.input, p.min, p.opt, p.max)
        if config.add_optimization_profile(profile) < 0:
            raise ExportError(f"target tensorrt: TensorRT refused the optimisation profile {settings.profiles}")
    if progress is not None and hasattr(trt, "IProgressMonitor"):  # TensorRT >= 10
        config.progress_monitor = _monitor(trt, BuildProgress(progress, Path(onnx_path).name))
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"target tensorrt: the engine build failed for {Path(onnx_path).name} (see TensorRT log)")
    Path(out).write_bytes(bytes(serialized))
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))

    # The runtime (edgeomni.engines.tensorrt_runner.mismatch) refuses the engine on another TensorRT release
    # or compute capability; `inputs`/`outputs` become the bundle component's tensor specs.
    try:
        gpu = gpu_identity()
    except BackendUnavailable as exc:
        raise ExportError(f"target tensorrt: cannot tell which GPU the engine is for: {exc}") from None
    return {"tensorrt": trt.__version__, "gpu": gpu.name, "compute_capability": gpu.compute_capability,
            "fp16": fp16, "int8": settings.int8, "typing": "weak" if weakly_typed else "strong",
            "float_biases": folded,
            "profiles": [asdict(p) for p in settings.profiles], "timing_cache": cache_path.name,
            "inputs": _tensor_specs(trt, [network.get_input(i) for i in range(network.num_inputs)]),
            "outputs": _tensor_specs(trt, [network.get_output(i) for i in range(network.num_outputs)]),
            "settings": json.loads(json.dumps(asdict(settings)))}


def _tensor_specs(trt: Any, tensors: list[Any]) -> list[dict[str, Any]]:
    """name/shape/dtype of network tensors in the manifest's TensorSpec form (-1 dims become "?")."""
    import numpy as np

    return [{"name": t.name, "shape": [d if d >= 0 else "?" for d in t.shape],
             "dtype": np.dtype(trt.nptype(t.dtype)).name} for t in tensors]

"""Run a serialized TensorRT engine from a bundle, with numpy in and out.

A TensorRT engine is tied to the TensorRT version and the GPU (compute capability) it was built on, so
before deserializing, the build record stored with the bundle component (written by
`export/steps/tensorrt_engine.build_engine`) is compared with this machine; a mismatch is refused with a message
naming both. `TensorRtEngine` exposes the small part of an onnxruntime session the engines use
(`run`, `get_inputs`, `get_outputs`), so it can stand in for one.

`tensorrt` and `cuda-python` (the `tensorrt` extra) are imported only inside the functions that need them:
the runtime path imports neither on a machine without them. Device memory goes through CUDA's runtime API
(`cuda.bindings.runtime`), the torch-free route of TensorRT's own samples.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeomni.errors import EdgeOmniError

# numpy dtype name -> the onnxruntime type string the engines read from `get_inputs()[i].type`
_ORT_TYPE = {"float32": "tensor(float)", "float16": "tensor(float16)", "int8": "tensor(int8)",
             "int32": "tensor(int32)", "int64": "tensor(int64)", "uint8": "tensor(uint8)", "bool": "tensor(bool)"}


class BackendUnavailable(EdgeOmniError):
    """A backend (here: the serialized engine) cannot run on this machine; the message is the one-line reason
    the fallback chain reports before trying the next backend."""


@dataclass(frozen=True)
class IoSpec:
    """One engine input or output, shaped like onnxruntime's NodeArg (name, shape, type)."""

    name: str
    shape: list[int | str]
    type: str
    dtype: str


@dataclass(frozen=True)
class ShapeRange:
    """The shapes an optimisation profile accepts for one input."""

    min: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class GpuIdentity:
    name: str
    compute_capability: str  # "8.7" (Orin), "9.0" (H100/H200)


def check_shape(name: str, shape: Sequence[int], allowed: ShapeRange) -> None:
    """Refuse a feed outside the engine's optimisation profile (TensorRT would fail with an opaque error)."""
    shape = tuple(int(d) for d in shape)
    if len(shape) != len(allowed.min):
        raise EdgeOmniError(f"tensorrt engine input {name!r}: expected rank {len(allowed.min)} "
                            f"(profile {list(allowed.min)}..{list(allowed.max)}), got shape {list(shape)}")
    bad = [i for i, (low, got, high) in enumerate(zip(allowed.min, shape, allowed.max, strict=True))
           if not low <= got <= high]
    if bad:
        raise EdgeOmniError(f"tensorrt engine input {name!r}: shape {list(shape)} is outside the optimisation "
                            f"profile {list(allowed.min)}..{list(allowed.max)} (dimension(s) {bad})")


def _release(version: str) -> str:
    """major.minor.patch: builds of one TensorRT release share the engine format."""
    return ".".join(str(version).split(".")[:3])


def mismatch(record: Mapping[str, Any], tensorrt_version: str, gpu: GpuIdentity) -> str | None:
    """Why an engine built as `record` says cannot run with this TensorRT on this GPU, or None if it can."""
    built_trt = str(record.get("tensorrt", "?"))
    built_gpu = str(record.get("gpu", "?"))
    built_cc = record.get("compute_capability")
    same_trt = _release(built_trt) == _release(tensorrt_version)
    # Engines are specialised per compute capability; an older record without it is matched on the GPU name.
    same_gpu = str(built_cc) == gpu.compute_capability if built_cc else built_gpu == gpu.name
    if same_trt and same_gpu:
        return None
    built = f"TensorRT {built_trt} on {built_gpu}" + (f" (sm {built_cc})" if built_cc else "")
    here = f"TensorRT {tensorrt_version} on {gpu.name} (sm {gpu.compute_capability})"
    return f"built for {built}, this is {here}"


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6 spelled it this way
        except ImportError:
            raise BackendUnavailable("cuda-python not installed (pip install 'edgeomni[tensorrt]')") from None
    return cudart


def _check(result: Any, what: str) -> Any:
    """cuda-python returns (error, *values); raise on an error, return the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        cudart = _cudart()
        message = cudart.cudaGetErrorString(err)[1].decode(errors="replace")
        raise BackendUnavailable(f"{what}: {message}")
    return values[0] if len(values) == 1 else tuple(values)


def gpu_identity(device: int = 0) -> GpuIdentity:
    """The CUDA device's name and compute capability; BackendUnavailable when there is none."""
    cudart = _cudart()
    count = _check(cudart.cudaGetDeviceCount(), "no usable CUDA device")
    if count < 1:
        raise BackendUnavailable("no CUDA device")
    props = _check(cudart.cudaGetDeviceProperties(device), f"CUDA device {device}")
    name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
    return GpuIdentity(name, f"{props.major}.{props.minor}")


def tensorrt_version() -> str:
    try:
        import tensorrt
    except ImportError:
        raise BackendUnavailable("tensorrt not installed") from None
    return str(tensorrt.__version__)


class _DeviceBuffer:
    """Device memory for one tensor, grown when a larger shape arrives (never shrunk)."""

    def __init__(self) -> None:
        self.ptr, self.capacity = 0, 0

    def fit(self, nbytes: int) -> int:
        if nbytes > self.capacity:
            self.free()
            self.ptr = int(_check(_cudart().cudaMalloc(max(nbytes, 1)), "cudaMalloc"))
            self.capacity = nbytes
        return self.ptr

    def free(self) -> None:
        if self.ptr:
            _cudart().cudaFree(self.ptr)
            self.ptr, self.capacity = 0, 0


class TensorRtEngine:
    """A deserialized engine with one execution context; `run` is serialized by a lock (contexts are not
    thread-safe, and the pipeline calls engines from a thread pool)."""

    def __init__(self, path: Path, record: Mapping[str, Any]) -> None:
        import tensorrt as trt

        self.path = Path(path)
        self._trt = trt
        if not self.path.is_file():
            raise BackendUnavailable(f"engine file {self.path} is missing")
        # The logger and runtime must outlive the engine (TensorRT's rule), so they are kept with it.
        self._logger = trt.Logger(trt.Logger.ERROR)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise BackendUnavailable(f"TensorRT could not deserialize {self.path.name} (corrupt or foreign engine)")
        self._context = self._engine.create_execution_context()
        self._stream = _check(_cudart().cudaStreamCreate(), "cudaStreamCreate")
        self._inputs, self._outputs, self._ranges = self._read_io()
        self._buffers = {spec.name: _DeviceBuffer() for spec in self._inputs + self._outputs}
        self._lock = threading.Lock()
        self.record = dict(record)

    @classmethod
    def load(cls, path: Path, record: Mapping[str, Any]) -> TensorRtEngine:
        """Check TensorRT, the GPU and the build record, then deserialize; BackendUnavailable says why not."""
        version = tensorrt_version()
        gpu = gpu_identity()
        reason = mismatch(record, version, gpu)
        if reason:
            raise BackendUnavailable(reason)
        return cls(path, record)

    def _read_io(self) -> tuple[list[IoSpec], list[IoSpec], dict[str, ShapeRange]]:
        trt, engine = self._trt, self._engine
        inputs, outputs, ranges = [], [], {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name
            shape: list[int | str] = [d if d >= 0 else "?" for d in engine.get_tensor_shape(name)]
            spec = IoSpec(name, shape, _ORT_TYPE.get(dtype, dtype), dtype)
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                low, _opt, high = engine.get_tensor_profile_shape(name, 0)
                ranges[name] = ShapeRange(tuple(low), tuple(high))
                inputs.append(spec)
            else:
                outputs.append(spec)
        return inputs, outputs, ranges

    def get_inputs(self) -> list[IoSpec]:
        return list(self._inputs)

    def get_outputs(self) -> list[IoSpec]:
        return list(self._outputs)

    def get_providers(self) -> list[str]:
        return ["TensorRT engine"]

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Like InferenceSession.run: set the profile shapes from the feeds, copy in, execute, copy out."""
        missing = [s.name for s in self._inputs if s.name not in feeds]
        if missing:
            raise EdgeOmniError(f"tensorrt engine {self.path.name}: missing input(s) {missing}")
        wanted = list(output_names) if output_names else [s.name for s in self._outputs]
        known = {s.name: s for s in self._outputs}
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise EdgeOmniError(f"tensorrt engine {self.path.name}: unknown output(s) {unknown} "
                                f"(it has {sorted(known)})")
        cudart = _cudart()
        to_device, to_host = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        with self._lock:
            hosts = {}
            for spec in self._inputs:
                array = np.ascontiguousarray(feeds[spec.name], dtype=spec.dtype)
                check_shape(spec.name, array.shape, self._ranges[spec.name])
                if not self._context.set_input_shape(spec.name, array.shape):
                    raise EdgeOmniError(f"tensorrt engine {self.path.name}: input {spec.name!r} shape "
                                        f"{list(array.shape)} refused by TensorRT")
                ptr = self._buffers[spec.name].fit(array.nbytes)
                _check(cudart.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes, to_device, self._stream),
                       f"copy {spec.name} to the GPU")
                self._context.set_tensor_address(spec.name, ptr)
                hosts[spec.name] = array  # kept alive until the stream is synchronised
            results = {}
            for spec in self._outputs:
                out = np.empty(tuple(self._context.get_tensor_shape(spec.name)), dtype=spec.dtype)
                self._context.set_tensor_address(spec.name, self._buffers[spec.name].fit(out.nbytes))
                results[spec.name] = out
            if not self._context.execute_async_v3(int(self._stream)):
                raise EdgeOmniError(f"tensorrt engine {self.path.name}: execution failed (see TensorRT log)")
            for name in wanted:
                out = results[name]
                _check(cudart.cudaMemcpyAsync(out.ctypes.data, self._buffers[name].ptr, out.nbytes, to_host,
                                              self._stream), f"copy {name} from the GPU")
            _check(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return [results[name] for name in wanted]

    def close(self) -> None:
        for buffer in getattr(self, "_buffers", {}).values():
            buffer.free()
        if getattr(self, "_stream", None) is not None:
            _cudart().cudaStreamDestroy(self._stream)
            self._stream = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown may have unloaded cuda already
            self.close()

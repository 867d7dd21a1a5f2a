"""A simulated GPU behind TensorRT's real Python API, for running our engine code where there is no GPU.

`SimulatedGpu` is the `world` of trt_bindings.CheckedModule: it gives TensorRT's calls their effects. The ONNX
parser fills the network with the model's real inputs and outputs; the builder checks what a real build
checks before it starts (a profile for every dynamic input, shapes inside it, ranks), reports progress through
the monitor our code hands it, and serializes an "engine" that carries the ONNX model; the runtime
deserializes it, and executing a context runs that model with onnxruntime on the CPU, reading the inputs from
and writing the outputs to simulated device memory. `SimulatedCudart` is the matching CUDA runtime: every call
is checked against the real `cuda.bindings.runtime` function's signature, device memory is host memory at
addresses only cudaMalloc hands out, and a copy outside an allocation fails.

What this cannot tell: whether TensorRT accepts a particular ONNX graph, its numerics, or its speed.
"""

from __future__ import annotations

import ctypes
import inspect
import json
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnxruntime as ort
from trt_bindings import ApiMisuse, Checked

MAGIC = b"SIMULATED-TENSORRT-ENGINE\n"
# ONNX Runtime's integer ops that onnx-tensorrt has no importer for (its operator support list); dynamic INT8
# models are made of them, which is why the export hands TensorRT their FP32 graph instead.
NO_IMPORTER = ("MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul")
_DTYPES = {"float32": "FLOAT", "float16": "HALF", "int8": "INT8", "int32": "INT32", "int64": "INT64",
           "bool": "BOOL", "uint8": "UINT8"}


@dataclass
class Allocation:
    buffer: ctypes.Array[ctypes.c_char]
    size: int


class SimulatedCudart:
    """`cuda.bindings.runtime` for a simulated GPU: the real module's enums, error codes and signatures."""

    def __init__(self, real: Any, gpu_name: str = "Simulated H200", compute_capability: str = "9.0") -> None:
        self.real, self.gpu_name, self.cc = real, gpu_name, compute_capability
        self.memory: dict[int, Allocation] = {}
        self.calls: list[str] = []
        self.cudaMemcpyKind = real.cudaMemcpyKind

    def __getattr__(self, name: str) -> Any:
        real_fn = getattr(self.real, name, None)
        if real_fn is None:
            raise ApiMisuse(f"cuda.bindings.runtime.{name} does not exist")
        impl = getattr(self, f"_{name}", None)
        if impl is None:
            raise NotImplementedError(f"the simulated GPU does not model {name}")

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                inspect.signature(real_fn).bind(*args, **kwargs)
            except TypeError as exc:
                raise ApiMisuse(f"cuda.bindings.runtime.{name}{args!r}: {exc}") from None
            self.calls.append(name)
            return impl(*args, **kwargs)
        return call

    @property
    def ok(self) -> Any:
        return self.real.cudaError_t.cudaSuccess

    def _cudaGetDeviceCount(self) -> tuple[Any, int]:
        return self.ok, 1

    def _cudaGetDeviceProperties(self, device: int) -> tuple[Any, Any]:
        major, minor = (int(x) for x in self.cc.split("."))
        return self.ok, SimpleNamespace(name=self.gpu_name.encode() + b"\x00" * 8, major=major, minor=minor)

    def _cudaGetErrorString(self, error: Any) -> tuple[Any, bytes]:
        return self.ok, f"simulated error {error}".encode()

    def _cudaStreamCreate(self) -> tuple[Any, Any]:
        return self.ok, self.real.cudaStream_t(0x5EED)

    def _cudaStreamSynchronize(self, stream: Any) -> tuple[Any]:
        return (self.ok,)

    def _cudaStreamDestroy(self, stream: Any) -> tuple[Any]:
        return (self.ok,)

    def _cudaMalloc(self, size: int) -> tuple[Any, int]:
        buffer = ctypes.create_string_buffer(int(size))
        address = ctypes.addressof(buffer)
        self.memory[address] = Allocation(buffer, int(size))
        return self.ok, address

    def _cudaFree(self, pointer: int) -> tuple[Any]:
        if self.memory.pop(int(pointer), None) is None:
            raise ApiMisuse(f"cudaFree({pointer:#x}): not an allocation")
        return (self.ok,)

    def device_span(self, pointer: int, nbytes: int) -> None:
        """Fail unless [pointer, pointer + nbytes) lies inside one allocation."""
        for start, allocation in self.memory.items():
            if start <= pointer and pointer + nbytes <= start + allocation.size:
                return
        raise ApiMisuse(f"device memory {pointer:#x} + {nbytes} bytes is outside every allocation")

    def _cudaMemcpyAsync(self, dst: int, src: int, count: int, kind: Any, stream: Any) -> tuple[Any]:
        if not isinstance(kind, self.real.cudaMemcpyKind):
            raise ApiMisuse(f"cudaMemcpyAsync kind: expected a cudaMemcpyKind, got {kind!r}")
        device = dst if kind == self.real.cudaMemcpyKind.cudaMemcpyHostToDevice else src
        self.device_span(int(device), int(count))
        ctypes.memmove(int(dst), int(src), int(count))
        return (self.ok,)


class SimulatedGpu:
    """TensorRT's effects (see the module docstring). `events` records what the build and run were handed."""

    def __init__(self, trt: Any, cudart: SimulatedCudart) -> None:
        self.trt, self.cudart = trt, cudart
        self.events: list[tuple[str, Any]] = []

    # -- protocol used by trt_bindings ----------------------------------------------------------------------
    def construct(self, cls: type, bound: dict[str, Any]) -> Checked:
        return Checked(cls, self, **bound)

    def get(self, obj: Checked, name: str) -> Any:
        getter = getattr(self, f"{obj.cls.__name__}__{name}", None)
        if getter is None:
            raise NotImplementedError(f"the simulated GPU has no value for {obj.cls.__name__}.{name}")
        return getter(obj)

    def call(self, obj: Checked, name: str, args: dict[str, Any], returns: str) -> Any:
        self.events.append((f"{obj.cls.__name__}.{name}", args))
        handler = getattr(self, f"{obj.cls.__name__}__{name}", None)
        if handler is not None:
            return handler(obj, **args)
        if returns == "None":
            return None
        cls_name = returns.rsplit(".", 1)[-1]
        real = getattr(self.trt, cls_name, None)
        if returns.startswith("tensorrt") and isinstance(real, type) and "__members__" not in vars(real):
            return Checked(real, self)
        raise NotImplementedError(f"the simulated GPU does not model {obj.cls.__name__}.{name} -> {returns}")

    # -- parsing ------------------------------------------------------------------------------------------
    def Builder__create_network(self, builder: Checked, flags: int = 0) -> Checked:
        return Checked(self.trt.INetworkDefinition, self, flags=flags)

    def OnnxParser__parse(self, parser: Checked, model: bytes, path: str | None = None) -> bool:
        import onnx

        try:
            graph = onnx.load_from_string(bytes(model)).graph
        except Exception as exc:  # what TensorRT's parser reports for an unreadable file
            parser.state["errors"] = [f"ModelImporter: failed to parse ONNX: {exc}"]
            return False
        refused = _unsupported_qdq(graph)
        if refused:
            parser.state["errors"] = refused
            return False
        initializers = {i.name for i in graph.initializer}
        network = parser.state["network"]
        network.state["inputs"] = [self._tensor(v) for v in graph.input if v.name not in initializers]
        network.state["outputs"] = [self._tensor(v) for v in graph.output]
        network.state["onnx"] = bytes(model)
        parser.state["errors"] = []
        return True

    def _tensor(self, value: Any) -> Checked:
        import onnx

        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)).name
        dims = tuple(d.dim_value if d.dim_value > 0 else -1 for d in value.type.tensor_type.shape.dim)
        return Checked(self.trt.ITensor, self, name=value.name, shape=self.trt.Dims(dims),
                       dtype=getattr(self.trt.DataType, _DTYPES[dtype]))

    def OnnxParser__num_errors(self, parser: Checked) -> int:
        return len(parser.state.get("errors", []))

    def OnnxParser__get_error(self, parser: Checked, index: int) -> Checked:
        return Checked(self.trt.ParserError, self, text=parser.state["errors"][index])

    def INetworkDefinition__num_inputs(self, network: Checked) -> int:
        return len(network.state.get("inputs", []))

    def INetworkDefinition__num_outputs(self, network: Checked) -> int:
        return len(network.state.get("outputs", []))

    def INetworkDefinition__get_input(self, network: Checked, index: int) -> Checked:
        return network.state["inputs"][index]

    def INetworkDefinition__get_output(self, network: Checked, index: int) -> Checked:
        return network.state["outputs"][index]

    # -- building -----------------------------------------------------------------------------------------
    def IBuilderConfig__set_flag(self, config: Checked, flag: Any) -> None:
        config.state.setdefault("flags", []).append(str(flag).rsplit(".", 1)[-1])

    def IBuilderConfig__create_timing_cache(self, config: Checked, serialized_timing_cache: bytes) -> Checked:
        return Checked(self.trt.ITimingCache, self, entries=bytes(serialized_timing_cache))

    def IBuilderConfig__set_timing_cache(self, config: Checked, cache: Checked, ignore_mismatch: bool) -> bool:
        config.state["timing_cache"] = cache
        return True

    def IBuilderConfig__get_timing_cache(self, config: Checked) -> Checked:
        return config.state["timing_cache"]

    def ITimingCache__serialize(self, cache: Checked) -> Checked:
        return Checked(self.trt.IHostMemory, self, buffer=cache.state["entries"] + b"timing;")

    def IOptimizationProfile__set_shape(self, profile: Checked, input: str, min: Any, opt: Any, max: Any) -> None:
        shapes = [tuple(int(d) for d in s) for s in (min, opt, max)]
        if not (len(shapes[0]) == len(shapes[1]) == len(shapes[2])):
            raise ApiMisuse(f"profile for {input!r}: ranks differ {shapes}")
        profile.state.setdefault("shapes", {})[input] = shapes

    def IBuilderConfig__add_optimization_profile(self, config: Checked, profile: Checked) -> int:
        if not profile.state.get("shapes"):
            return -1  # the bindings' documented refusal of a profile that is not valid
        config.state.setdefault("profiles", []).append(profile)
        return len(config.state["profiles"]) - 1

    def Builder__build_serialized_network(self, builder: Checked, network: Checked, config: Checked) -> Checked | None:
        profiles = [p.state["shapes"] for p in config.state.get("profiles", [])]
        for tensor in network.state["inputs"]:
            dims = tuple(tensor.state["shape"])
            if -1 not in dims:
                continue
            if not profiles or tensor.state["name"] not in profiles[0]:
                raise ApiMisuse(f"build: dynamic input {tensor.state['name']!r} {dims} has no optimisation profile")
            low, opt, high = profiles[0][tensor.state["name"]]
            fits = len(low) == len(dims) and all(d in (-1, lo, hi) and lo <= op <= hi
                                                 for d, lo, op, hi in zip(dims, low, opt, high, strict=True))
            if not fits:
                raise ApiMisuse(f"build: profile {low}/{opt}/{high} does not fit input {tensor.state['name']!r} {dims}")
        monitor = config.state.get("progress_monitor")
        if monitor is not None:
            monitor.phase_start("Building engine", None, 2)
            for step in range(2):
                monitor.phase_start("Tactic search", "Building engine", 3)
                for tactic in range(3):
                    if not monitor.step_complete("Tactic search", tactic):
                        return None  # cancelled
                monitor.phase_finish("Tactic search")
                monitor.step_complete("Building engine", step)
            monitor.phase_finish("Building engine")
        header = {"inputs": [_spec(t) for t in network.state["inputs"]],
                  "outputs": [_spec(t) for t in network.state["outputs"]],
                  "profile": profiles[0] if profiles else {}, "flags": config.state.get("flags", []),
                  "strongly_typed": bool(network.state.get("flags", 0)
                                         & (1 << int(getattr(self.trt.NetworkDefinitionCreationFlag,
                                                             "STRONGLY_TYPED", 0))))}
        self.events.append(("built", header))
        blob = MAGIC + json.dumps(header).encode() + b"\n" + network.state["onnx"]
        return Checked(self.trt.IHostMemory, self, buffer=blob)

    # -- running ------------------------------------------------------------------------------------------
    def Runtime__deserialize_cuda_engine(self, runtime: Checked, serialized_engine: bytes) -> Checked | None:
        data = bytes(serialized_engine)
        if not data.startswith(MAGIC):
            return None  # what TensorRT returns for a foreign or corrupt plan
        header, _, model = data[len(MAGIC):].partition(b"\n")
        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        return Checked(self.trt.ICudaEngine, self, header=json.loads(header), session=session)

    def _io(self, engine: Checked) -> list[dict[str, Any]]:
        header = engine.state["header"]
        return [{**t, "input": True} for t in header["inputs"]] + [{**t, "input": False} for t in header["outputs"]]

    def ICudaEngine__num_io_tensors(self, engine: Checked) -> int:
        return len(self._io(engine))

    def ICudaEngine__get_tensor_name(self, engine: Checked, index: int) -> str:
        return str(self._io(engine)[index]["name"])

    def _named(self, engine: Checked, name: str) -> dict[str, Any]:
        found = [t for t in self._io(engine) if t["name"] == name]
        if not found:
            raise ApiMisuse(f"engine has no tensor {name!r}")
        return found[0]

    def ICudaEngine__get_tensor_dtype(self, engine: Checked, name: str) -> Any:
        return getattr(self.trt.DataType, _DTYPES[self._named(engine, name)["dtype"]])

    def ICudaEngine__get_tensor_shape(self, engine: Checked, name: str) -> Any:
        return self.trt.Dims(tuple(self._named(engine, name)["shape"]))

    def ICudaEngine__get_tensor_mode(self, engine: Checked, name: str) -> Any:
        mode = self.trt.TensorIOMode
        return mode.INPUT if self._named(engine, name)["input"] else mode.OUTPUT

    def ICudaEngine__get_tensor_profile_shape(self, engine: Checked, name: str, profile_index: int) -> list[Any]:
        shapes = engine.state["header"]["profile"].get(name)
        if shapes is None:
            fixed = tuple(self._named(engine, name)["shape"])
            shapes = [fixed, fixed, fixed]
        return [self.trt.Dims(tuple(s)) for s in shapes]

    def ICudaEngine__create_execution_context(self, engine: Checked, strategy: Any = None) -> Checked:
        return Checked(self.trt.IExecutionContext, self, engine=engine, shapes={}, addresses={})

    def IExecutionContext__set_input_shape(self, context: Checked, name: str, shape: tuple[int, ...]) -> bool:
        engine = context.state["engine"]
        low, _opt, high = self.ICudaEngine__get_tensor_profile_shape(engine, name, 0)
        shape = tuple(int(d) for d in shape)
        if len(shape) != len(low) or not all(lo <= d <= hi for lo, d, hi in zip(low, shape, high, strict=True)):
            return False
        context.state["shapes"][name] = shape
        context.state.pop("output_shapes", None)
        return True

    def IExecutionContext__set_tensor_address(self, context: Checked, name: str, memory: int) -> bool:
        self._named(context.state["engine"], name)
        context.state["addresses"][name] = int(memory)
        return True

    def _feeds(self, context: Checked, read: bool) -> dict[str, np.ndarray]:
        feeds = {}
        for spec in context.state["engine"].state["header"]["inputs"]:
            shape = context.state["shapes"].get(spec["name"])
            if shape is None:
                raise ApiMisuse(f"input {spec['name']!r}: no shape set before use")
            array = np.zeros(shape, dtype=spec["dtype"])
            if read:
                address = context.state["addresses"][spec["name"]]
                self.cudart.device_span(address, array.nbytes)
                ctypes.memmove(array.ctypes.data, address, array.nbytes)
            feeds[spec["name"]] = array
        return feeds

    def IExecutionContext__get_tensor_shape(self, context: Checked, name: str) -> Any:
        spec = self._named(context.state["engine"], name)
        if spec["input"]:
            return self.trt.Dims(context.state["shapes"].get(name, tuple(spec["shape"])))
        if "output_shapes" not in context.state:  # once per set of input shapes, as TensorRT infers them
            engine = context.state["engine"]
            names = [t["name"] for t in engine.state["header"]["outputs"]]
            results = engine.state["session"].run(names, self._feeds(context, read=False))
            context.state["output_shapes"] = {n: r.shape for n, r in zip(names, results, strict=True)}
        return self.trt.Dims(context.state["output_shapes"][name])

    def IExecutionContext__execute_async_v3(self, context: Checked, stream_handle: int) -> bool:
        engine = context.state["engine"]
        names = [t["name"] for t in engine.state["header"]["outputs"]]
        results = engine.state["session"].run(names, self._feeds(context, read=True))
        for name, result in zip(names, results, strict=True):
            address = context.state["addresses"].get(name)
            if address is None:
                raise ApiMisuse(f"output {name!r}: no address set before execute_async_v3")
            result = np.ascontiguousarray(result)
            self.cudart.device_span(address, result.nbytes)
            ctypes.memmove(address, result.ctypes.data, result.nbytes)
        return True


def _unsupported_qdq(graph: Any) -> list[str]:
    """What TensorRT's ONNX parser (onnx-tensorrt) refuses in a QDQ graph, in its words: a dequantize from int32
    (ONNX Runtime's quantized biases) and a zero point that is not all zeros."""
    from onnx import TensorProto, numpy_helper

    constants = {i.name: i for i in graph.initializer}
    errors = []
    for node in graph.node:
        if node.op_type in NO_IMPORTER:
            errors.append(f"In node {node.name} (checkControlFlow): UNSUPPORTED_NODE: No importer registered for op: "
                          f"{node.op_type}.")
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        source = constants.get(node.input[0])
        if node.op_type == "DequantizeLinear" and source is not None and source.data_type == TensorProto.INT32:
            errors.append(f"ITensor::getDimensions: Error Code 3: API Usage Error ({node.name}: only activation types "
                          f"allowed as input to this layer.)")
            continue
        zero_point = constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zero_point is not None and numpy_helper.to_array(zero_point).astype(np.int64).any():
            errors.append(f"In node {node.name} (parseNode): INVALID_NODE: Assertion failed: shiftIsAllZeros(zeroPoint)"
                          ": TensorRT only supports symmetric quantization. The zero point for the "
                          "QuantizeLinear/DequantizeLinear operator must be all zeros.")
    return errors


def _spec(tensor: Checked) -> dict[str, Any]:
    dtype = {v: k for k, v in _DTYPES.items()}[str(tensor.state["dtype"]).rsplit(".", 1)[-1]]
    return {"name": tensor.state["name"], "shape": list(tensor.state["shape"]), "dtype": dtype}

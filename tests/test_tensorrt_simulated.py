"""Issue 6: the TensorRT path, run through NVIDIA's real Python API on a simulated GPU.

No GPU and no TensorRT libraries here, but NVIDIA's bindings wheels are plain wheels on PyPI: `make test`
downloads those of the releases in requirements/tensorrt-bindings.txt (JetPack 6's 10.3, the pinned 10.16,
the newest 11.x), tests/trt_bindings.py imports one with stub native libraries, and tests/trt_simulated_gpu.py
gives its calls their effects (onnxruntime computes what the "engine" returns, device memory is checked host
memory). So the export's builder and the runtime's engine run end to end against that release's real classes,
method names, argument names and types, and a call the release would refuse fails here. The pinned release
runs in this process; the others run this file again in a subprocess.

What only a GPU can tell (TensorRT accepting our graphs, its numerics, its speed) stays with
`test_engine_on_gpu` and scripts/gpu_tensorrt_check.sh.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import pinned_tensorrt, tensorrt_releases
from test_tensorrt_runtime import check_labeller_engine
from trt_bindings import ApiMisuse
from trt_simulated_gpu import SimulatedGpu

from edgeomni.export.recipe import Recipe
from edgeomni.export.tensorrt import TensorRtSettings, build_engine, model_input_dims, profile_for

ROOT = Path(__file__).resolve().parents[1]


def _labeller_onnx(default_bundle: Path) -> Path:
    return default_bundle / "labeller" / "mobilenet_v2_int8.onnx"


def test_labeller_engine_builds_runs_and_is_chosen_by_the_runtime(simulated_gpu: SimulatedGpu, default_bundle: Path,
                                                                  tmp_path: Path) -> None:
    """The GPU test's own steps (build from the INT8 ONNX, run against ORT CPU, profile refusal, the labeller on the
    engine through the bundle), on the simulated GPU."""
    record = check_labeller_engine(default_bundle, tmp_path)
    trt = sys.modules["tensorrt"]
    assert record["tensorrt"] == trt.__version__ and record["gpu"] == "Simulated H200"
    assert record["compute_capability"] == "9.0" and (tmp_path / "timing.cache").is_file()
    built = [event for name, event in simulated_gpu.events if name == "built"]
    assert len(built) == 1 and built[0]["profile"] == {"input": [(1, 3, 224, 224), (1, 3, 224, 224), (8, 3, 224, 224)]}
    if int(trt.__version__.split(".")[0]) >= 11:  # strongly typed: precision from the ONNX types, no flags
        assert built[0]["strongly_typed"] and built[0]["flags"] == []
        assert record["typing"] == "strong" and not record["fp16"]
    else:
        assert not built[0]["strongly_typed"] and sorted(built[0]["flags"]) == ["FP16", "INT8"]
        assert record["typing"] == "weak" and record["fp16"]


def test_the_build_reports_progress_through_the_real_monitor_class(simulated_gpu: SimulatedGpu, default_bundle: Path,
                                                                   tmp_path: Path) -> None:
    onnx_path = _labeller_onnx(default_bundle)
    name, shape = next(iter(model_input_dims(onnx_path).items()))
    lines: list[str] = []
    settings = TensorRtSettings(profiles=[profile_for(name, shape, [1, 3, 224, 224], 4)])
    build_engine(onnx_path, tmp_path / "m.engine", settings, lines.append)
    assert lines[0] == "    mobilenet_v2_int8.onnx: Building engine (2 steps)"
    assert lines[-1].startswith("    mobilenet_v2_int8.onnx: Building engine done in ")
    assert len(lines) == 2  # nested phases and the steps of a fast build print nothing more


def test_a_model_tensorrt_cannot_parse_fails_clearly(simulated_gpu: SimulatedGpu, tmp_path: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not an onnx model")
    from edgeomni.errors import ExportError

    with pytest.raises(ExportError, match=r"TensorRT cannot parse broken.onnx: ModelImporter"):
        build_engine(bad, tmp_path / "m.engine", TensorRtSettings())


def test_a_dynamic_input_without_a_profile_is_what_the_builder_refuses(simulated_gpu: SimulatedGpu,
                                                                        default_bundle: Path, tmp_path: Path) -> None:
    """The simulated builder checks what TensorRT checks before a build: here the profile is missing."""
    with pytest.raises(ApiMisuse, match="dynamic input 'input'"):
        build_engine(_labeller_onnx(default_bundle), tmp_path / "m.engine", TensorRtSettings(profiles=[]))


def test_calls_the_release_would_refuse_are_caught(simulated_gpu: SimulatedGpu) -> None:
    """The checks can fail: TensorRT 8 spellings, a wrong keyword, a read-only property, a list for a tuple, a
    raw int for a CUDA enum, a copy past the end of device memory."""
    trt = sys.modules["tensorrt"]
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    config = builder.create_builder_config()
    with pytest.raises(ApiMisuse, match=r"Builder.build_engine .* does not exist"):
        builder.build_engine(network, config)  # removed in TensorRT 10
    with pytest.raises(ApiMisuse, match="max_workspace_size"):
        config.max_workspace_size = 1 << 30  # removed in TensorRT 10
    cache = config.create_timing_cache(b"")
    with pytest.raises(ApiMisuse, match=r"set_timing_cache .* takes no such arguments"):
        config.set_timing_cache(cache, ignore=False)
    with pytest.raises(ApiMisuse, match=r"num_inputs .* is read-only"):
        network.num_inputs = 3
    with pytest.raises(ApiMisuse, match=r"Runtime.* matches no constructor"):
        trt.Runtime()
    with pytest.raises(ApiMisuse, match="does not exist in TensorRT"):
        trt.Engine  # noqa: B018 - the attribute access is the call under test
    context = trt.Runtime(logger).deserialize_cuda_engine(b"")
    assert context is None  # a foreign plan: TensorRT returns None, it does not raise
    from edgeomni.engines import tensorrt_runner

    cudart = tensorrt_runner._cudart()
    pointer = cudart.cudaMalloc(16)[1]
    host = np.zeros(8, np.float32)
    with pytest.raises(ApiMisuse, match="kind: expected a cudaMemcpyKind"):
        cudart.cudaMemcpyAsync(pointer, host.ctypes.data, 16, 1, None)
    with pytest.raises(ApiMisuse, match="outside every allocation"):
        cudart.cudaMemcpyAsync(pointer, host.ctypes.data, 32, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, None)
    with pytest.raises(ApiMisuse, match="cudaMalloc"):
        cudart.cudaMalloc(16, 0)


def test_an_execution_context_checks_shapes_and_argument_names(simulated_gpu: SimulatedGpu, default_bundle: Path,
                                                                tmp_path: Path) -> None:
    onnx_path = _labeller_onnx(default_bundle)
    name, shape = next(iter(model_input_dims(onnx_path).items()))
    settings = TensorRtSettings(profiles=[profile_for(name, shape, [1, 3, 224, 224], 2)])
    build_engine(onnx_path, tmp_path / "m.engine", settings)
    trt = sys.modules["tensorrt"]
    engine = trt.Runtime(trt.Logger(trt.Logger.ERROR)).deserialize_cuda_engine((tmp_path / "m.engine").read_bytes())
    context = engine.create_execution_context()
    assert context.set_input_shape(name, (1, 3, 224, 224))
    assert not context.set_input_shape(name, (3, 3, 224, 224))  # outside the profile: False, as TensorRT says
    assert context.set_input_shape(name, [1, 3, 224, 224])  # a list is one of its overloads
    with pytest.raises(ApiMisuse, match="set_input_shape"):
        context.set_input_shape(tensor=name, shape=(1, 3, 224, 224))  # the argument is `name`
    with pytest.raises(ApiMisuse, match="set_input_shape"):
        context.set_input_shape(name, "1x3x224x224")


@pytest.mark.slow
def test_the_mobilenet_recipe_ships_an_engine_the_runtime_runs(simulated_gpu: SimulatedGpu, tmp_path: Path) -> None:
    """`edgeomni export export/mobilenet_v2.yaml` with the tensorrt target, end to end: the symmetric QDQ copy is
    built into `<role>-tensorrt` with its record, the bundle verifies, and the run's engine layer picks it."""
    from edgeomni.bundle import verify_bundle
    from edgeomni.engines.labeller import ImageLabeller
    from edgeomni.export.runner import run_recipe

    recipe = Recipe.load(ROOT / "export" / "mobilenet_v2.yaml",
                         ["targets=[onnxruntime-cpu, tensorrt]", "calibration.count=8", "heldout.count=16",
                          "latency_runs=4", "gate.min=0.5"])
    bundle_dir = run_recipe(recipe, tmp_path / "out", progress=lambda line: None)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    version = sys.modules["tensorrt"].__version__
    assert report["targets"]["tensorrt"] == f"built: TensorRT {version} on Simulated H200"
    built = [event for name, event in simulated_gpu.events if name == "built"]
    assert len(built) == 1
    parsed = [args["model"] for name, args in simulated_gpu.events if name == "OnnxParser.parse"]
    assert len(parsed) == 1  # the symmetric QDQ copy (TensorRT takes no zero points), not the CPU bundle's model
    import onnx

    graph = onnx.load_from_string(bytes(parsed[0])).graph
    zero_points = [onnx.numpy_helper.to_array(i) for i in graph.initializer if i.name.endswith("_zero_point")]
    assert zero_points and all(z.dtype in (np.int8, np.int32) and not z.any() for z in zero_points)
    bundle = verify_bundle(bundle_dir)
    engine = bundle.manifest.by_role("image-labeller-tensorrt")
    assert engine.report["tensorrt"] == version and engine.report["gpu"] == "Simulated H200"
    labeller = ImageLabeller(bundle)
    assert labeller.backend.backend == "tensorrt" and labeller.backend.skipped == (), labeller.backend
    from skimage import data

    assert labeller(np.asarray(data.chelsea()))[0].name  # labelled through the engine


@pytest.mark.slow
@pytest.mark.skipif("EDGEOMNI_TRT_BINDINGS" in os.environ, reason="run from the main process only")
@pytest.mark.parametrize("release", [r for r in tensorrt_releases() if r != pinned_tensorrt()])
def test_the_same_against_every_other_supported_release(release: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
                            cwd=ROOT, env={**os.environ, "EDGEOMNI_TRT_BINDINGS": release},
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"TensorRT {release}:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}"
    assert " passed" in result.stdout.splitlines()[-1]

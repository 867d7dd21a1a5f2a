"""The TensorRT path, run through NVIDIA's real Python API on a simulated GPU.

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
from edgeomni.export.steps.tensorrt_engine import TensorRtSettings, build_engine, model_input_dims, profile_for

ROOT = Path(__file__).resolve().parents[1]
# Whole export recipes run once, on the pinned release: the other releases' runs check the same API calls
# through the lighter tests.
main_release_only = pytest.mark.skipif("EDGEOMNI_TRT_BINDINGS" in os.environ, reason="whole recipes: pinned release")


def _labeller_onnx(default_bundle: Path) -> Path:
    return default_bundle / "labeller" / "mobilenet_v2_int8.onnx"


@pytest.fixture(scope="module")
def symmetric_labeller(default_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default bundle's MobileNetV2 quantized with symmetric int8 activations (the tensorrt target's form;
    ONNX Runtime's int32 biases still in it), from 4 calibration images."""
    from edgeomni.datasets.calibration_photos import build_calibration_sets
    from edgeomni.export.steps.quantize_int8 import quantize_int8

    out = tmp_path_factory.mktemp("symmetric") / "mobilenet_v2_int8_symmetric.onnx"
    calibration = build_calibration_sets(calibration_count=4, heldout_count=1).calibration
    quantize_int8(default_bundle / "labeller" / "mobilenet_v2_fp32.onnx", out, calibration, method="percentile",
                  percentile=99.99, activations="int8-symmetric", progress=lambda line: None)
    return out


def test_the_tensorrt_form_has_float_biases_and_refuses_asymmetric_qdq(default_bundle: Path,
                                                                       symmetric_labeller: Path) -> None:
    """TensorRT's parser refuses ONNX Runtime's int32 bias dequantize and any non-zero or uint8 zero point;
    `tensorrt_form` turns each int32 bias into the float bias it stands for (same outputs) and names an
    asymmetric node instead of handing it to TensorRT."""
    import onnx
    import onnxruntime as ort

    from edgeomni.errors import ExportError
    from edgeomni.export.steps.tensorrt_engine import tensorrt_form

    with pytest.raises(ExportError, match=r"node '.+' has a uint8 zero point .* only symmetric int8 Q/DQ"):
        tensorrt_form(_labeller_onnx(default_bundle))  # the CPU bundle's uint8 activations
    model, folded = tensorrt_form(symmetric_labeller)
    graph = onnx.load_from_string(model).graph
    constants = {i.name: i.data_type for i in graph.initializer}
    assert folded >= 50  # one per Conv/Gemm bias
    assert not [n for n in graph.node if n.op_type == "DequantizeLinear"
                and constants.get(n.input[0]) == onnx.TensorProto.INT32]
    batch = np.random.default_rng(0).normal(size=(2, 3, 224, 224)).astype(np.float32)
    cpu = ["CPUExecutionProvider"]
    before = ort.InferenceSession(str(symmetric_labeller), providers=cpu).run(None, {"input": batch})
    after = ort.InferenceSession(model, providers=cpu).run(None, {"input": batch})
    assert (before[0].argmax(1) == after[0].argmax(1)).all() and np.abs(before[0] - after[0]).max() < 0.05


def test_the_simulated_parser_refuses_what_tensorrt_refuses(simulated_gpu: SimulatedGpu, default_bundle: Path,
                                                            symmetric_labeller: Path) -> None:
    trt = sys.modules["tensorrt"]
    logger = trt.Logger(trt.Logger.WARNING)
    for model, words in ((symmetric_labeller, "only activation types allowed as input to this layer"),
                         (_labeller_onnx(default_bundle), "TensorRT only supports symmetric quantization")):
        parser = trt.OnnxParser(trt.Builder(logger).create_network(0), logger)
        assert not parser.parse(model.read_bytes())
        assert any(words in str(parser.get_error(i)) for i in range(parser.num_errors))


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


def test_the_build_reports_progress_through_the_real_monitor_class(simulated_gpu: SimulatedGpu,
                                                                   symmetric_labeller: Path, tmp_path: Path) -> None:
    name, shape = next(iter(model_input_dims(symmetric_labeller).items()))
    lines: list[str] = []
    settings = TensorRtSettings(profiles=[profile_for(name, shape, [1, 3, 224, 224], 4)])
    build_engine(symmetric_labeller, tmp_path / "m.engine", settings, lines.append)
    assert lines[0] == "    mobilenet_v2_int8_symmetric.onnx: Building engine (2 steps)"
    assert lines[-1].startswith("    mobilenet_v2_int8_symmetric.onnx: Building engine done in ")
    assert len(lines) == 2  # nested phases and the steps of a fast build print nothing more


def test_a_model_tensorrt_cannot_parse_fails_clearly(simulated_gpu: SimulatedGpu, tmp_path: Path) -> None:
    """A file that is not ONNX, and a dynamic-INT8 graph (MatMulInteger: TensorRT has no importer for it), each
    stop the target with TensorRT's or our own reason and the file's name."""
    import onnx
    from onnx import TensorProto, helper

    from edgeomni.errors import ExportError

    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(ExportError, match=r"broken\.onnx is not a readable ONNX model"):
        build_engine(bad, tmp_path / "m.engine", TensorRtSettings())
    dynamic = tmp_path / "dynamic.onnx"
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["y"], name="mmi")], "g",
                              [helper.make_tensor_value_info("a", TensorProto.INT8, [2, 4]),
                               helper.make_tensor_value_info("b", TensorProto.INT8, [4, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [2, 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), dynamic)
    with pytest.raises(ExportError, match=r"TensorRT cannot parse dynamic\.onnx: .*No importer registered for op: "
                                          r"MatMulInteger"):
        build_engine(dynamic, tmp_path / "m.engine", TensorRtSettings())


def test_a_dynamic_input_without_a_profile_is_what_the_builder_refuses(simulated_gpu: SimulatedGpu,
                                                                        symmetric_labeller: Path,
                                                                        tmp_path: Path) -> None:
    """The simulated builder checks what TensorRT checks before a build: here the profile is missing."""
    with pytest.raises(ApiMisuse, match="dynamic input 'input'"):
        build_engine(symmetric_labeller, tmp_path / "m.engine", TensorRtSettings(profiles=[]))


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


def test_an_execution_context_checks_shapes_and_argument_names(simulated_gpu: SimulatedGpu,
                                                                symmetric_labeller: Path, tmp_path: Path) -> None:
    onnx_path = symmetric_labeller
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
@main_release_only
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
    assert report["targets"]["tensorrt"].startswith(f"built: TensorRT {version} on Simulated H200, onnxruntime's "
                                                    f"TensorRT EP: mobilenet-v2.tensorrt.onnx (top1_agreement ")
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
    # The TensorRT EP's model is byte for byte what TensorRT's parser was handed for the engine.
    ep_model = bundle.manifest.by_role("image-labeller-tensorrt-onnx")
    assert (bundle.path / ep_model.file).read_bytes() == bytes(parsed[0])
    labeller = ImageLabeller(bundle)
    assert labeller.backend.backend == "tensorrt" and labeller.backend.skipped == (), labeller.backend
    from skimage import data

    assert labeller(np.asarray(data.chelsea()))[0].name  # labelled through the engine
    from edgeomni.bench.tensorrt_latency import markdown, measure  # what the GPU script prints per backend

    rows = {row["backend"]: row for row in measure(bundle_dir, "image-labeller", runs=2, threads=1)}
    assert rows["tensorrt"]["status"] == "ok" and rows["tensorrt"]["vs_cpu"].startswith("top-1 ")
    # Symmetric int8 against the CPU's uint8 model: 4 of the 6 photos are labelled surely (the cat twice, the coffee,
    # the camera); the astronaut and the rocket are near-ties the two INT8 forms split either way (4/6 here).
    assert int(rows["tensorrt"]["vs_cpu"].split()[1].split("/")[0]) >= 4, rows["tensorrt"]
    assert rows["cuda"]["status"] == "n/a" and "| tensorrt |" in markdown(list(rows.values()))


@pytest.mark.slow
@main_release_only
def test_the_ppocr_recipe_ships_engines_the_text_reader_reads_through(simulated_gpu: SimulatedGpu,
                                                                       tmp_path: Path) -> None:
    """PP-OCR with the tensorrt target: an engine per component, and the runtime's TextReader on them reads
    what it reads on ONNX Runtime, for frames from 64 px to 4K and a line wider than the recognizer takes (every
    shape its pre-processing makes must fall inside the engines' profiles, or the run would stop)."""
    from edgeomni.bundle import verify_bundle
    from edgeomni.datasets.slides import generated_slides
    from edgeomni.engines.ocr import TextReader
    from edgeomni.engines.session import EngineProfile
    from edgeomni.export.runner import run_recipe

    recipe = Recipe.load(ROOT / "export" / "ppocr_v4.yaml",
                         ["targets=[onnxruntime-cpu, tensorrt]", "calibration.count=4", "heldout.count=4",
                          "latency_runs=3", "gate.max_excluded=2"])
    bundle = verify_bundle(run_recipe(recipe, tmp_path / "out", progress=lambda line: None))
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    parts = report["targets"]["tensorrt"].split("; ")
    version = sys.modules["tensorrt"].__version__
    assert [p.split(", onnxruntime's")[0] for p in parts] == [f"{c} built: TensorRT {version} on Simulated H200"
                                                              for c in ("detector", "recognizer")]
    for name in ("detector", "recognizer"):  # a static INT8 component's engine is INT8, another's FP16 (TensorRT 10)
        shipped = report["components"][name]  # (also one whose symmetric INT8 form failed the gate: FP16 from FP32)
        static = shipped["chosen_precision"] == "int8" and shipped["quantization"]["format"] == "QDQ"
        int8 = static and "fallback" not in report["tensorrt"][name]
        assert bundle.manifest.by_role(f"ocr-{name}-tensorrt").precision == ("int8" if int8 else "fp16")
        if shipped["chosen_precision"] == "fp32":  # the shipped FP32 ONNX is the TensorRT EP's model as it is
            assert not bundle.manifest.has_role(f"ocr-{name}-tensorrt-onnx")
        else:
            assert bundle.manifest.by_role(f"ocr-{name}-tensorrt-onnx").precision == ("int8" if int8 else "fp32")
    on_gpu, on_cpu = TextReader(bundle), TextReader(bundle, EngineProfile(backend="cpu"))
    assert (on_gpu.detector.backend.backend, on_gpu.recognizer.backend.backend) == ("tensorrt", "tensorrt")
    slides = [s.image for s in generated_slides("heldout", 4, 99).slides]
    frames = [*slides, slides[0][:64, :96], np.pad(slides[1], ((0, 1400), (0, 2400), (0, 0)), constant_values=255),
              np.tile(slides[2][:60], (1, 6, 1))]  # a small crop, a 4K-sized page, a very wide strip
    for frame in frames:
        assert [line.text for line in on_gpu(frame)] == [line.text for line in on_cpu(frame)]
    wide_line = np.full((48, 4000, 3), 255, np.uint8)
    assert on_gpu.recognizer(wide_line) == on_cpu.recognizer(wide_line)  # capped at 32 heights, inside the profile
    from edgeomni.bench.tensorrt_latency import measure

    for role in ("ocr-detector", "ocr-recognizer"):
        rows = {row["backend"]: row for row in measure(bundle.path, role, runs=2, threads=1)}
        assert rows["tensorrt"]["status"] == "ok" and rows["tensorrt"]["vs_cpu"].startswith("cosine >= "), rows


@pytest.mark.slow
@pytest.mark.skipif("EDGEOMNI_TRT_BINDINGS" in os.environ, reason="run from the main process only")
@pytest.mark.parametrize("release", [r for r in tensorrt_releases() if r != pinned_tensorrt()])
def test_the_same_against_every_other_supported_release(release: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
                            cwd=ROOT, env={**os.environ, "EDGEOMNI_TRT_BINDINGS": release},
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"TensorRT {release}:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}"
    assert " passed" in result.stdout.splitlines()[-1]

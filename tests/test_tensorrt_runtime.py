"""TensorRT engines at run time, with fallback TensorRT engine -> TensorRT EP -> CUDA EP -> CPU.

This machine has no GPU and no TensorRT, so most tests prove the fallback and its reasons with the real
default bundle; the shape and version checks are pure functions tested directly. `test_engine_on_gpu` does
the real thing (build an engine from the INT8 MobileNetV2 and run it) wherever TensorRT and a GPU exist.
"""

from __future__ import annotations

import io
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeomni.bundle import VerifiedBundle, verify_bundle
from edgeomni.bundle.describe import describe_file
from edgeomni.bundle.manifest import Manifest
from edgeomni.config import RunConfig
from edgeomni.engines import tensorrt_runner
from edgeomni.engines.backend import open_engine
from edgeomni.engines.labeller import ImageLabeller
from edgeomni.engines.session import EngineProfile, create_session
from edgeomni.engines.tensorrt_runner import BackendUnavailable, GpuIdentity, ShapeRange, check_shape, mismatch
from edgeomni.errors import ConfigError, EdgeOmniError, EngineError
from edgeomni.events import StartEvent

ROLE = "image-labeller"
ORIN_RECORD = {"tensorrt": "10.3.0.30", "gpu": "Orin", "compute_capability": "8.7"}


def _photo(name: str) -> np.ndarray:
    from skimage import data

    return np.asarray(getattr(data, name)())


def _add_engine(bundle_dir: Path, engine_bytes: bytes, record: dict[str, Any]) -> VerifiedBundle:
    """Add `<role>-tensorrt` to a bundle copy the way the export's _write_bundle does (describe_file)."""
    manifest = Manifest.load(bundle_dir)
    onnx = manifest.by_role(ROLE)
    (bundle_dir / "labeller" / "mobilenet_v2.engine").write_bytes(engine_bytes)
    io_specs = {"inputs": [vars(t) for t in onnx.inputs], "outputs": [vars(t) for t in onnx.outputs]}
    component = describe_file(bundle_dir, "labeller/mobilenet_v2.engine", name="labeller_tensorrt",
                              role=f"{ROLE}-tensorrt", precision="int8", license=onnx.license,
                              provenance=onnx.provenance, preprocess=onnx.preprocess, report={**io_specs, **record})
    manifest.components[component.name] = component
    manifest.save(bundle_dir)
    return verify_bundle(bundle_dir)


# --- pure checks -------------------------------------------------------------------------------------------

def test_shape_inside_the_profile_is_accepted_and_outside_is_refused() -> None:
    allowed = ShapeRange(min=(1, 3, 224, 224), max=(8, 3, 224, 224))
    check_shape("input", (1, 3, 224, 224), allowed)
    check_shape("input", (8, 3, 224, 224), allowed)
    with pytest.raises(EdgeOmniError, match=r"shape \[9, 3, 224, 224\] is outside .*\[1, 3, 224, 224\]\.\."
                                            r"\[8, 3, 224, 224\] \(dimension\(s\) \[0\]\)"):
        check_shape("input", (9, 3, 224, 224), allowed)
    with pytest.raises(EdgeOmniError, match=r"dimension\(s\) \[2, 3\]"):
        check_shape("input", (1, 3, 320, 320), allowed)
    with pytest.raises(EdgeOmniError, match=r"'input': expected rank 4 .* got shape \[3, 224, 224\]"):
        check_shape("input", (3, 224, 224), allowed)


def test_profile_from_the_export_matches_what_the_runtime_checks() -> None:
    from edgeomni.export.steps.tensorrt_engine import profile_for

    profile = profile_for("input", ["batch", 3, 224, 224], [1, 3, 224, 224], max_batch=8)
    allowed = ShapeRange(profile.min, profile.max)
    check_shape("input", (4, 3, 224, 224), allowed)
    with pytest.raises(EdgeOmniError, match="outside the optimisation profile"):
        check_shape("input", (16, 3, 224, 224), allowed)


def test_engine_for_another_tensorrt_or_gpu_is_refused_naming_both() -> None:
    h200 = GpuIdentity("NVIDIA H200", "9.0")
    reason = mismatch(ORIN_RECORD, "10.7.0.23", h200)
    assert reason == "built for TensorRT 10.3.0.30 on Orin (sm 8.7), this is TensorRT 10.7.0.23 on NVIDIA H200 (sm 9.0)"
    assert "Orin" in str(mismatch(ORIN_RECORD, "10.3.0.30", h200))  # same TensorRT, other GPU
    assert mismatch(ORIN_RECORD, "10.3.0.26", GpuIdentity("Orin", "8.7")) is None  # same release, other build
    assert "TensorRT 10.4.0" in str(mismatch(ORIN_RECORD, "10.4.0", GpuIdentity("Orin", "8.7")))
    # An older record without a compute capability is matched on the GPU name
    assert mismatch({"tensorrt": "10.3.0", "gpu": "Orin"}, "10.3.0", GpuIdentity("Orin", "8.7")) is None
    assert mismatch({"tensorrt": "10.3.0", "gpu": "Orin"}, "10.3.0", h200) is not None


def test_backend_setting_is_validated() -> None:
    assert RunConfig.from_dict({"engine": {"backend": "cpu"}}).engine.backend == "cpu"
    with pytest.raises(ConfigError, match=r"engine.backend: expected one of auto, tensorrt, tensorrt-ep, cuda, "
                                          r"cpu, got 'gpu'"):
        RunConfig.from_dict({"engine": {"backend": "gpu"}})


def test_no_gpu_here_is_a_clear_reason() -> None:
    try:
        gpu = tensorrt_runner.gpu_identity()
    except BackendUnavailable as exc:
        assert str(exc) in ("cuda-python not installed (pip install 'edgeomni[tensorrt]')",) or "CUDA" in str(exc)
    else:
        pytest.skip(f"this machine has a GPU ({gpu.name}); the no-GPU reason cannot be observed")


# --- the fallback chain on the real default bundle ---------------------------------------------------------

def test_auto_falls_back_to_cpu_and_says_why(default_bundle: Path) -> None:
    import onnxruntime as ort

    if set(ort.get_available_providers()) & {"TensorrtExecutionProvider", "CUDAExecutionProvider"}:
        pytest.skip("this onnxruntime has a GPU provider; the CPU fallback is not what auto picks here")
    session, choice = open_engine(verify_bundle(default_bundle), ROLE)
    assert choice.backend == "cpu" and session.get_providers() == ["CPUExecutionProvider"]
    assert choice.skipped == (
        "tensorrt engine skipped: no image-labeller-tensorrt engine in bundle 'default'",
        f"onnxruntime TensorRT EP skipped: this onnxruntime has no TensorrtExecutionProvider "
        f"(it offers {', '.join(ort.get_available_providers())})",
        f"onnxruntime CUDA EP skipped: this onnxruntime has no CUDAExecutionProvider "
        f"(it offers {', '.join(ort.get_available_providers())})",
    )
    assert choice.summary == "image-labeller on onnxruntime CPU"  # no engine shipped: nothing to explain


def test_shipped_engine_that_cannot_run_here_falls_back_with_a_warning(tmp_bundle_copy: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    if _tensorrt_runs_here():
        pytest.skip("TensorRT and a GPU are present: the engine would be tried for real")
    bundle = _add_engine(tmp_bundle_copy, b"not an engine", ORIN_RECORD)
    component = bundle.manifest.by_role(f"{ROLE}-tensorrt")
    # its tensor specs come from the build record (TensorRT is not needed to describe it)
    assert component.format == "tensorrt" and component.inputs == bundle.manifest.by_role(ROLE).inputs
    with caplog.at_level(logging.INFO, logger="edgeomni.engines"):
        labeller = ImageLabeller(bundle)
    reason = labeller.backend.skipped[0]
    assert reason.startswith("tensorrt engine skipped: ")
    assert reason.split(": ", 1)[1] in ("tensorrt not installed", "cuda-python not installed "
                                        "(pip install 'edgeomni[tensorrt]')") or "CUDA" in reason
    assert labeller.backend.backend in ("cpu", "cuda", "tensorrt-ep")
    assert reason in labeller.backend.summary  # the run header says why the shipped engine is unused
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and reason in warnings[0].getMessage()


def test_engine_record_for_another_machine_is_refused_in_the_chain(tmp_bundle_copy: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # No TensorRT here: pretend to be TensorRT 10.7 on an H200 so the record check (which runs before any
    # deserialization) is what refuses the Orin engine.
    monkeypatch.setattr(tensorrt_runner, "tensorrt_version", lambda: "10.7.0.23")
    monkeypatch.setattr(tensorrt_runner, "gpu_identity", lambda device=0: GpuIdentity("NVIDIA H200", "9.0"))
    bundle = _add_engine(tmp_bundle_copy, b"an Orin engine", ORIN_RECORD)
    _session, choice = open_engine(bundle, ROLE)
    assert choice.skipped[0] == ("tensorrt engine skipped: built for TensorRT 10.3.0.30 on Orin (sm 8.7), "
                                 "this is TensorRT 10.7.0.23 on NVIDIA H200 (sm 9.0)")
    assert choice.backend != "tensorrt"


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_missing_or_corrupt_engine_falls_back_with_a_clear_reason(tmp_bundle_copy: Path, damage: str) -> None:
    bundle = _add_engine(tmp_bundle_copy, b"\x00" * 4096, ORIN_RECORD)
    engine = bundle.path / bundle.manifest.by_role(f"{ROLE}-tensorrt").file
    if damage == "missing":  # e.g. removed after verification (a disk problem, a half-applied update)
        engine.unlink()
        expected = "tensorrt engine skipped: engine file labeller/mobilenet_v2.engine is missing from the bundle"
    else:
        engine.write_bytes(b"\x00" * 4095 + b"\x01")
        expected = ("tensorrt engine skipped: engine file labeller/mobilenet_v2.engine does not match its manifest "
                    "sha256/size (changed since the bundle was built)")
    _session, choice = open_engine(bundle, ROLE)
    assert choice.skipped[0] == expected and choice.backend != "tensorrt"


@pytest.mark.parametrize("backend", ["tensorrt", "tensorrt-ep", "cuda"])
def test_forcing_a_backend_that_cannot_run_is_an_error_not_a_cpu_run(tmp_bundle_copy: Path, backend: str) -> None:
    import onnxruntime as ort

    provider = {"tensorrt-ep": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider"}.get(backend)
    if _tensorrt_runs_here() or provider in ort.get_available_providers():
        pytest.skip(f"backend {backend} may run here")
    bundle = _add_engine(tmp_bundle_copy, b"an Orin engine", ORIN_RECORD)
    with pytest.raises(EngineError, match=rf"image-labeller: \[engine\] backend = '{backend}' cannot run here: "
                                          rf".* skipped: .*set backend = \"auto\" to fall back"):
        open_engine(bundle, ROLE, EngineProfile(backend=backend))


def test_roles_that_ship_no_engine_run_on_onnx_under_a_forced_tensorrt_backend(default_bundle: Path) -> None:
    # The default bundle has no OCR engines: forcing TensorRT must not stop on-screen text (the labeller, whose
    # engine is the point of forcing, still fails loudly: the test below); with "auto" the reason is reported.
    from edgeomni.engines.ocr import TextDetector

    bundle = verify_bundle(default_bundle)
    forced = TextDetector(bundle, EngineProfile(backend="tensorrt"))
    assert forced.backend is not None and forced.backend.backend != "tensorrt"
    auto = TextDetector(bundle)
    assert auto.backend is not None
    assert auto.backend.skipped[0] == "tensorrt engine skipped: no ocr-detector-tensorrt engine in bundle 'default'"


def check_tensorrt_ep_options(options: dict[str, Any]) -> None:
    """Every option is one onnxruntime-gpu's Python binding knows (an unknown one fails the session: "Invalid
    TensorRT EP option"), with a value of the form its own error message asks for."""
    import re

    wants = dict(line.split("\t", 1) for line in (Path(__file__).parent / "data" /
                 "onnxruntime_tensorrt_ep_options.tsv").read_text().splitlines() if not line.startswith("#"))
    shapes = re.compile(r"^[^:,]+:\d+(x\d+)*(,[^:,]+:\d+(x\d+)*)*$")
    for key, value in options.items():
        assert key in wants, f"{key} is not a TensorRT EP option of onnxruntime-gpu"
        text = str(value)  # what onnxruntime's Python layer hands the binding
        if wants[key].startswith("'True' or 'False'"):
            assert text in ("True", "False"), (key, text)
        elif "dim1xdim" in wants[key]:
            assert shapes.match(text), (key, text)
        elif wants[key].startswith("a path string"):
            assert text and Path(text).is_absolute(), (key, text)


def test_the_tensorrt_ep_is_not_handed_a_model_quantized_for_cpus(default_bundle: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """An onnxruntime that offers the TensorRT EP: the labeller's INT8 ONNX (uint8 activations, int32 biases:
    refused by TensorRT, "int8 is not configured" without the flag) is skipped with the reason; an FP32 model (the
    default bundle's OCR detector) is handed over with engine caching, FP16 and no INT8, through onnxruntime's
    real provider-option checks. This CPU build then runs it on CPU, which the chain reports and steps past."""
    import onnxruntime as ort

    from edgeomni.engines import backend
    from edgeomni.engines.ocr import TextDetector

    if "TensorrtExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the TensorRT EP: it would be used for real")
    offered = ["TensorrtExecutionProvider", *ort.get_available_providers()]
    monkeypatch.setattr(backend.ort, "get_available_providers", lambda: offered)
    handed: list[tuple[str, dict[str, Any]]] = []

    def recording(path: Path, profile: EngineProfile | None = None, options: Any = None) -> Any:
        handed.append((Path(path).name, dict((options or {}).get("TensorrtExecutionProvider", {}))))
        return create_session(path, profile, options)

    monkeypatch.setattr(backend, "create_session", recording)
    bundle = verify_bundle(default_bundle)
    _session, choice = open_engine(bundle, ROLE)
    assert choice.skipped[1] == ("onnxruntime TensorRT EP skipped: no image-labeller-tensorrt-onnx in bundle "
                                 "'default', and its int8 ONNX is quantized for CPUs, which TensorRT refuses "
                                 "(export with the tensorrt target)")
    detector = TextDetector(bundle)
    assert detector.backend is not None and detector.backend.skipped[1] == (
        "onnxruntime TensorRT EP skipped: onnxruntime could not initialise TensorrtExecutionProvider "
        "(driver/libraries missing?)")
    name, options = next(h for h in handed if h[1])
    assert name == Path(bundle.manifest.by_role("ocr-detector").file).name
    assert options["trt_int8_enable"] is False and options["trt_fp16_enable"] is True
    assert options["trt_engine_cache_enable"] is True
    sha = bundle.manifest.by_role("ocr-detector").sha256
    assert Path(options["trt_engine_cache_path"]).name == sha[:16]  # per model content: a new model, a new cache
    check_tensorrt_ep_options(options)


def check_tensorrt_ep_model(bundle: VerifiedBundle, role: str) -> Any:
    """The export's `<role>-tensorrt-onnx` is what the TensorRT EP step opens, in the form TensorRT's parser takes
    (symmetric int8 Q/DQ, no int32 bias dequantize), with INT8 on exactly when it has Q/DQ and the export's
    profiles; returns the component."""
    import onnx
    from onnx import TensorProto, numpy_helper

    from edgeomni.engines.backend import _tensorrt_ep_model

    component, options = _tensorrt_ep_model(bundle, role)
    assert component.role == f"{role}-tensorrt-onnx" and component.format == "onnx"
    graph = onnx.load(str(bundle.path / component.file)).graph
    constants = {i.name: i for i in graph.initializer}
    qdq = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert (component.precision == "int8") == bool(qdq) == options["trt_int8_enable"]
    for node in qdq:
        source = constants.get(node.input[0])
        assert source is None or source.data_type != TensorProto.INT32, f"{node.name}: int32 dequantize"
        if len(node.input) > 2 and node.input[2]:
            zero = numpy_helper.to_array(constants[node.input[2]])
            assert zero.dtype == np.int8 and not zero.any(), f"{node.name}: zero point {zero.ravel()[:3]}"
    profile = component.report["profiles"][0]
    assert options["trt_profile_max_shapes"] == f"{profile['input']}:{'x'.join(map(str, profile['max']))}"
    check_tensorrt_ep_options(options)
    return component


def test_tensorrt_ep_caches_of_models_unused_for_30_days_are_removed(default_bundle: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import time

    from edgeomni.engines.backend import _tensorrt_ep_model
    from edgeomni.engines.session import EP_CACHE_KEEP_DAYS

    monkeypatch.setenv("EDGEOMNI_CACHE", str(tmp_path))
    root = tmp_path / "tensorrt-ep"
    for name, age_days in (("replaced-model", EP_CACHE_KEEP_DAYS + 1), ("other-bundle", EP_CACHE_KEEP_DAYS - 1)):
        (root / name).mkdir(parents=True)
        (root / name / "x.engine").write_bytes(b"engine")
        os.utime(root / name, (time.time() - age_days * 86400,) * 2)
    component, options = _tensorrt_ep_model(verify_bundle(default_bundle), "ocr-detector")
    assert sorted(p.name for p in root.iterdir()) == sorted(["other-bundle", component.sha256[:16]])
    assert options["trt_engine_cache_path"] == str(root / component.sha256[:16])
    (tmp_path / "read-only").write_text("a file where the cache folder should be")
    monkeypatch.setenv("EDGEOMNI_CACHE", str(tmp_path / "read-only"))
    with pytest.raises(BackendUnavailable, match=r"cannot keep its engine cache in .*read-only/tensorrt-ep/"
                                                 r".*\(set EDGEOMNI_CACHE to a writable folder\)"):
        _tensorrt_ep_model(verify_bundle(default_bundle), "ocr-detector")


def test_models_without_an_engine_choice_get_a_cached_tensorrt_ep_engine(default_bundle: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """VAD, ASR and faces take the provider order as it is; where that offers the TensorRT EP, their engines are
    cached (same precision as before: no INT8, no FP16), in a folder that changes when the file does."""
    import onnxruntime as ort

    from edgeomni.engines import session as session_module

    if "TensorrtExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the TensorRT EP: it would be used for real")
    monkeypatch.setenv("EDGEOMNI_CACHE", str(tmp_path / "cache"))
    offered = ["TensorrtExecutionProvider", *ort.get_available_providers()]
    monkeypatch.setattr(session_module.ort, "get_available_providers", lambda: offered)
    handed: list[Any] = []
    real = ort.InferenceSession

    def recording(path: str, sess_options: Any = None, providers: Any = None) -> Any:
        handed.append(providers)
        return real(path, sess_options=sess_options, providers=providers)  # (this build then runs it on CPU)

    monkeypatch.setattr(session_module.ort, "InferenceSession", recording)
    vad = tmp_path / "silero_vad.onnx"
    shutil.copyfile(default_bundle / "vad" / "silero_vad.onnx", vad)
    create_session(vad)
    name, options = handed[-1][0]
    assert name == "TensorrtExecutionProvider" and options["trt_int8_enable"] is False
    assert options["trt_fp16_enable"] is False and options["trt_engine_cache_enable"] is True
    check_tensorrt_ep_options(options)
    first = options["trt_engine_cache_path"]
    create_session(vad)
    assert handed[-1][0][1]["trt_engine_cache_path"] == first  # the same file: its cached engine again
    import os

    os.utime(vad, ns=(vad.stat().st_atime_ns, vad.stat().st_mtime_ns + 10**9))  # rewritten a second later
    create_session(vad)
    assert handed[-1][0][1]["trt_engine_cache_path"] != first


def test_tensorrt_ep_options_carry_the_exports_profiles(tmp_path: Path) -> None:
    from edgeomni.engines.session import tensorrt_ep_options

    profile = {"input": "x", "min": [1, 3, 32, 32], "opt": [1, 3, 64, 96], "max": [1, 3, 960, 960]}
    options = tensorrt_ep_options(tmp_path, int8=True, fp16=True, profiles=[profile])
    assert options["trt_profile_min_shapes"] == "x:1x3x32x32" and options["trt_profile_max_shapes"] == "x:1x3x960x960"
    assert options["trt_profile_opt_shapes"] == "x:1x3x64x96" and options["trt_int8_enable"] is True
    check_tensorrt_ep_options(options)
    assert "trt_profile_min_shapes" not in tensorrt_ep_options(tmp_path, int8=False, fp16=True)


def test_the_run_header_names_every_role_with_a_backend_once(default_bundle: Path) -> None:
    import asyncio

    from edgeomni.engines.backend import STEP_NAMES
    from edgeomni.engines.bundle_engines import Engines
    from edgeomni.sinks.terminal import TerminalSink

    engines = Engines.load(verify_bundle(default_bundle), RunConfig.from_dict({"speech": {"enabled": False}}))
    assert list(engines.backends) == [ROLE, "ocr-detector", "ocr-recognizer"]
    out = io.StringIO()
    asyncio.run(TerminalSink(out).send(StartEvent(source="x.mp4", wall=0.0, describe="", bundle=engines.tag,
                                                  backend=engines.backends)))
    where = {choice["backend"] for choice in engines.backends.values()}
    if len(where) == 1:  # (the default bundle ships no engine, so nothing was skipped for a reason worth showing)
        assert f"  engines: {ROLE}, ocr-detector, ocr-recognizer on {STEP_NAMES[where.pop()]}\n" in out.getvalue()


def test_forced_tensorrt_stops_the_run_before_it_starts(default_bundle: Path) -> None:
    from edgeomni.engines.bundle_engines import Engines

    if _tensorrt_runs_here():
        pytest.skip("TensorRT and a GPU are present here")
    config = RunConfig.from_dict({"engine": {"backend": "tensorrt"}, "speech": {"enabled": False}})
    with pytest.raises(EngineError, match="no image-labeller-tensorrt engine in bundle 'default'"):
        Engines.load(verify_bundle(default_bundle), config)


def test_labels_are_unchanged_through_the_fallback_and_reported_in_the_header(default_bundle: Path) -> None:
    from edgeomni.engines.bundle_engines import Engines
    from edgeomni.engines.image_preprocess import preprocess_rgb
    from edgeomni.sinks.terminal import TerminalSink

    bundle = verify_bundle(default_bundle)
    config = RunConfig.from_dict({"speech": {"enabled": False}, "visual": {"faces": False, "ocr": False}})
    engines = Engines.load(bundle, config)
    assert engines.labeller is not None
    # Reference: the INT8 ONNX on a plain CPU session, as before the engine layer existed
    component = bundle.manifest.by_role(ROLE)
    reference = create_session(bundle.path / component.file, EngineProfile(("CPUExecutionProvider",)))
    for name in ("chelsea", "coffee"):
        photo = _photo(name)
        batch = preprocess_rgb(photo, engines.labeller.size, engines.labeller._mean, engines.labeller._std)
        expected = int(np.argmax(reference.run(None, {reference.get_inputs()[0].name: batch})[0][0]))
        assert engines.labeller(photo, k=1)[0].name == engines.labeller.names[expected]
    assert "cat" in engines.labeller(_photo("chelsea"))[0].name

    assert engines.backends[ROLE]["backend"] == engines.labeller.backend.backend
    out = io.StringIO()
    import asyncio

    asyncio.run(TerminalSink(out).send(StartEvent(source="x.mp4", wall=0.0, describe="video", bundle=engines.tag,
                                                  backend=engines.backends)))
    assert f"  engines: image-labeller on {engines.labeller.backend.summary.split(' on ', 1)[1]}" in out.getvalue()


# --- the real thing, where TensorRT and a GPU exist ----------------------------------------------------------

def _tensorrt_runs_here() -> bool:
    try:
        tensorrt_runner.tensorrt_version()
        tensorrt_runner.gpu_identity()
    except BackendUnavailable:
        return False
    return True


@pytest.mark.slow
def test_engine_on_gpu(default_bundle: Path, tmp_path: Path) -> None:
    if not _tensorrt_runs_here():
        pytest.skip("needs TensorRT and an NVIDIA GPU (pip install 'edgeomni[tensorrt]' on a GPU machine; "
                    "test_tensorrt_simulated.py runs the same steps on a simulated GPU)")
    check_labeller_engine(default_bundle, tmp_path)


def check_labeller_engine(default_bundle: Path, tmp_path: Path) -> dict[str, Any]:
    """Build an engine from the default bundle's MobileNetV2 quantized the way the export's tensorrt target does
    (symmetric int8 activations: the bundle's own uint8 ones are refused by TensorRT), run it against ORT CPU,
    refuse a batch outside its profile, and label a photo through the bundle's engine layer; returns the build
    record."""
    from edgeomni.datasets.calibration_photos import build_calibration_sets
    from edgeomni.engines.image_preprocess import preprocess_rgb
    from edgeomni.engines.tensorrt_runner import TensorRtEngine
    from edgeomni.export.recipe import Recipe
    from edgeomni.export.steps.tensorrt_engine import TensorRtSettings, build_engine, profile_for
    from edgeomni.export.tasks.classifier import _symmetric_qdq

    bundle_dir = tmp_path / "bundle"
    shutil.copytree(default_bundle, bundle_dir, copy_function=shutil.copyfile)
    manifest = Manifest.load(bundle_dir)
    onnx = manifest.by_role(ROLE)  # the MobileNetV2 recipe's INT8 QDQ ONNX (uint8 activations, for x86)
    calibration = build_calibration_sets(calibration_count=8, heldout_count=1).calibration
    recipe = Recipe.load(Path(__file__).resolve().parents[1] / "export" / "mobilenet_v2.yaml")
    symmetric = _symmetric_qdq(recipe, bundle_dir / manifest.by_role(f"{ROLE}-fp32").file, bundle_dir / onnx.file,
                               calibration, [], tmp_path, lambda line: None)
    name_in = onnx.inputs[0].name
    settings = TensorRtSettings(profiles=[profile_for(name_in, list(onnx.inputs[0].shape), [1, 3, 224, 224], 8)])
    engine_path = tmp_path / "mobilenet_v2.engine"
    record = build_engine(symmetric, engine_path, settings)
    engine = TensorRtEngine.load(engine_path, record)
    reference = create_session(symmetric, EngineProfile(("CPUExecutionProvider",)))
    size, mean, std = onnx.preprocess["size"], onnx.preprocess["mean"], onnx.preprocess["std"]
    # The astronaut and the rocket are near-ties for MobileNetV2 (FP32: 0.29 vs 0.12, 0.26 vs 0.23) that two INT8
    # runs may split either way; the cats and the coffee (0.79 and 0.99 sure) must come out the same.
    names, decisive = ("chelsea", "coffee", "astronaut", "rocket", "cat"), {"chelsea", "coffee", "cat"}
    differ = []
    for name in names:
        batch = preprocess_rgb(_photo(name), size, tuple(mean), tuple(std))
        trt_top = int(np.argmax(engine.run(None, {name_in: batch})[0][0]))
        cpu_top = int(np.argmax(reference.run(None, {reference.get_inputs()[0].name: batch})[0][0]))
        if trt_top != cpu_top:
            differ.append(name)
    assert not decisive & set(differ), f"TensorRT top-1 differs from ORT CPU on {differ}"
    with pytest.raises(EdgeOmniError, match="outside the optimisation profile"):
        engine.run(None, {name_in: np.zeros((9, 3, 224, 224), np.float32)})
    # Through the bundle and the engine layer: the labeller now runs on the engine
    bundle = _add_engine(bundle_dir, engine_path.read_bytes(), record)
    labeller = ImageLabeller(bundle)
    assert labeller.backend.backend == "tensorrt" and labeller.backend.skipped == ()
    assert "cat" in labeller(_photo("chelsea"))[0].name
    return record


def test_backend_benchmark_reports_reasons_instead_of_figures(default_bundle: Path) -> None:
    from edgeomni.bench.tensorrt_latency import markdown, measure

    rows = {row["backend"]: row for row in measure(default_bundle, ROLE, runs=3, threads=1)}
    assert rows["cpu"]["status"] == "ok" and rows["cpu"]["vs_cpu"] == "top-1 6/6"
    assert rows["cpu"]["ms"]["n"] == 3 and rows["cpu"]["ms"]["p50"] > 0
    if not _tensorrt_runs_here():
        assert rows["tensorrt"]["status"] == "n/a"
        assert "no image-labeller-tensorrt engine in bundle 'default'" in rows["tensorrt"]["reason"]
    assert "| cpu |" in markdown(list(rows.values()))
    # The OCR models too, on slides (detector) and their text lines (recognizer) from the runtime's pre-processing
    for role in ("ocr-detector", "ocr-recognizer"):
        rows = {row["backend"]: row for row in measure(default_bundle, role, runs=2, threads=1)}
        assert rows["cpu"]["status"] == "ok" and rows["cpu"]["vs_cpu"].startswith("cosine >= 1.00000 on ")
        assert rows["cpu"]["inputs"] >= 6
        if not _tensorrt_runs_here():
            assert f"no {role}-tensorrt engine in bundle 'default'" in rows["tensorrt"]["reason"]

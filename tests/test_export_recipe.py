"""`edgeomni export RECIPE.yaml`: recipe validation, bad input, the accuracy gate, and a real MobileNetV2 export."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgeomni.errors import ExportError
from edgeomni.export.recipe import Recipe
from edgeomni.export.steps.tensorrt_engine import Profile, TensorRtSettings, build_engine, profile_for
from edgeomni.export.steps.tensorrt_engine import available as tensorrt_version

ROOT = Path(__file__).resolve().parents[1]
MOBILENET = ROOT / "export" / "mobilenet_v2.yaml"


def write(tmp_path: Path, recipe: dict, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe))
    return path


def base() -> dict:
    return yaml.safe_load(MOBILENET.read_text())


def export(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgeomni.cli", "export", *args], capture_output=True, text=True,
                          timeout=900)


@pytest.mark.parametrize("recipe", sorted((ROOT / "export").glob("*.yaml")), ids=lambda p: p.stem)
def test_check_prints_every_shipped_recipe_as_it_would_run_and_does_nothing(recipe: Path, tmp_path: Path) -> None:
    result = export(str(recipe), "--check", "--set", "latency_runs=7", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout)  # the printout is the recipe itself, every field, overrides applied
    assert shown["latency_runs"] == 7 and shown["name"] == yaml.safe_load(recipe.read_text())["name"]
    assert set(shown) >= {"source", "calibration", "heldout", "quantize", "gate", "targets"}
    assert "# local inputs:\n#   source." in result.stdout  # the weights (or checkpoint folder), resolved
    assert not (tmp_path / "out").exists()


def test_check_names_a_missing_local_input(tmp_path: Path) -> None:
    result = export(str(MOBILENET), "--check", "--set", f"calibration.images={tmp_path / 'no-such-folder'}")
    assert result.returncode == 2
    assert f"calibration.images: {tmp_path / 'no-such-folder'} is not a directory" in result.stderr
    raw = base()
    raw["source"]["path"] = "missing.pth"
    result = export(str(write(tmp_path, raw)), "--check")
    assert result.returncode == 2 and "source.path: " in result.stderr and "nothing is downloaded" in result.stderr


def test_shipped_recipe_is_valid() -> None:
    recipe = Recipe.load(MOBILENET)
    assert recipe.name == "mobilenet-v2" and recipe.quantize.activations == "uint8-asymmetric"
    assert recipe.gate.min_size_ratio == 3.5
    assert recipe.finetune.cutouts == "photos:calibration" and recipe.heldout.images == "photos:heldout"


@pytest.mark.parametrize(("change", "needle"), [
    ({"quantise": {"mode": "static"}}, "unknown field(s) ['quantise']"),
    ({"source": {"kind": "tensorflow", "path": "x"}}, "source.kind: expected one of"),
    ({"calibration": {"count": "many"}}, "count: expected int, got str 'many'"),
    ({"gate": {"min": 1.5}}, "gate.min: expected 0..1, got 1.5"),
    ({"gate": {"metric": "cosine"}}, "gate.metric: expected a metric for task 'image-classification'"),
    ({"targets": ["tflite"]}, "targets[0]: expected one of"),
    ({"quantize": {"method": "kl"}}, "quantize.method: expected one of"),
    ({"finetune": {"epochs": 3}}, "finetune: unknown field(s) ['epochs']"),
    ({"finetune": {"lr": 0}}, "finetune.lr: expected in (0, 10], got 0"),
    ({"finetune": {"cutouts": "photos:heldout"}}, "finetune.cutouts: expected '' or 'photos:calibration'"),
    ({"quantize": {"mode": "dynamic"}, "steps": ["export", "quantize", "finetune", "gate"]},
     "finetune only for task image-classification with quantize.mode static"),
    ({"steps": ["export", "finetune", "quantize", "gate"]}, "steps: expected each at most once, in the order"),
])
def test_bad_recipe_fields_are_named(tmp_path: Path, change: dict, needle: str) -> None:
    raw = base()
    for key, value in change.items():
        raw[key] = {**raw[key], **value} if isinstance(raw.get(key), dict) and isinstance(value, dict) else value
    with pytest.raises(ExportError, match=None) as caught:
        Recipe.load(write(tmp_path, raw))
    assert needle in str(caught.value)


def test_overrides_are_checked_like_the_file(tmp_path: Path) -> None:
    assert Recipe.load(MOBILENET, ["quantize.method=entropy"]).quantize.method == "entropy"
    with pytest.raises(ExportError, match=r"quantize\.percentile: expected float"):
        Recipe.load(MOBILENET, ["quantize.percentile=high"])
    with pytest.raises(ExportError, match="expected FIELD=VALUE"):
        Recipe.load(MOBILENET, ["quantize.method"])


def test_missing_local_checkpoint_is_a_clear_error_and_never_a_download(tmp_path: Path) -> None:
    raw = base()
    raw["source"] = {"kind": "huggingface", "path": str(tmp_path / "whisper-tiny"), "input_name": "input",
                     "input_shape": [1, 3, 224, 224]}
    result = export(str(write(tmp_path, raw)), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "nothing is downloaded" in result.stderr


def test_empty_calibration_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    raw = base()
    raw["calibration"] = {"images": str(tmp_path / "empty"), "count": 8, "seed": 1}
    result = export(str(write(tmp_path, raw)), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "holds no images" in result.stderr and "empty calibration set" in result.stderr
    assert (tmp_path / "out" / "report.json").is_file()  # what was done is still reported
    assert not (tmp_path / "out" / "bundle").exists()


def test_model_whose_input_does_not_match_the_calibration_data(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    # A real (tiny) model that takes 1x64 vectors, not the recipe's 1x3x224x224 images.
    graph = helper.make_graph([helper.make_node("Relu", ["features"], ["out"])], "tiny",
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 64])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 64])])
    model = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    raw = base()
    raw["source"] = {"kind": "onnx", "path": str(model), "input_name": "input", "input_shape": [1, 3, 224, 224]}
    result = export(str(write(tmp_path, raw)), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "inputs ['features'] do not match the calibration data" in result.stderr


@pytest.mark.slow
def test_mobilenet_recipe_end_to_end_and_an_unmeetable_gate(tmp_path: Path) -> None:
    # Small sets keep this quick; the figures in docs/BENCHMARKS.md come from the shipped recipe.
    quick = ["--set", "calibration.count=16", "--set", "heldout.count=24", "--set", "latency_runs=8",
             "--set", "finetune.steps=4", "--set", "finetune.views=16",
             "--set", "steps=[export, quantize, finetune, gate]"]
    result = export(str(MOBILENET), "--out", str(tmp_path / "ok"), *quick, "--set", "gate.min=0.5")
    assert result.returncode == 0, result.stdout + result.stderr
    bundle = tmp_path / "ok" / "bundle"
    report = json.loads((bundle / "report.json").read_text())
    component = report["components"]["mobilenet-v2"]
    assert component["gate"]["passed"] and component["size_ratio"] >= 3.5
    assert 0.5 < component["gate"]["fp32_self_agreement_1_grey_level"] <= 1.0
    decisive = component["gate"]["agreement_where_fp32_decisive"]
    assert [d["min_margin"] for d in decisive] == [0.1, 0.2, 0.3]
    assert 24 >= decisive[0]["inputs"] >= decisive[1]["inputs"] >= decisive[2]["inputs"]
    assert report["calibration"]["count"] == 16 and report["calibration"]["seed"] == 1234
    assert report["heldout"]["strata"]["imagenet-val"] > 0  # stratified: the small sources get their share
    finetuned = component["quantization"]["finetune"]
    assert finetuned["steps"] == 4 and finetuned["augmented_views"] == 16 and finetuned["weights_changed"] > 0
    assert "cut-out photos (photos:calibration)" in finetuned["cutouts"]
    summary = (bundle / "report.md").read_text()
    assert "(before fine-tuning) -> " in summary and "Quantization-aware fine-tuning: 4 steps" in summary
    assert "Where FP32 is decisive" in summary
    if tensorrt_version() is None:  # the TensorRT target fails with its reason; the ONNX bundle is still written
        assert "not built" in report["targets"]["tensorrt"] and "not installed" in report["targets"]["tensorrt"]
    assert report["tensorrt"]["profiles"][0]["max"] == [8, 3, 224, 224]
    # The TensorRT form (symmetric int8 activations) is another model than the gated CPU one: gated too.
    assert "onnxruntime's TensorRT EP: mobilenet-v2.tensorrt.onnx (top1_agreement " in report["targets"]["tensorrt"]
    ep_gate = report["tensorrt"]["gate"]
    assert ep_gate["passed"] and 0.5 <= ep_gate["value"] <= 1.0 and ep_gate["min"] == 0.5
    verify = subprocess.run([sys.executable, "-m", "edgeomni.cli", "bundle", "verify", str(bundle)],
                            capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stderr
    # The INT8 labeller in the bundle really labels: the scikit-image cat comes out as a cat.
    from skimage import data

    from edgeomni.bundle import verify_bundle
    from edgeomni.engines.labeller import ImageLabeller

    labeller = ImageLabeller(verify_bundle(bundle))
    assert "cat" in labeller(np.asarray(data.chelsea()))[0].name
    # The TensorRT EP's copy (symmetric, float biases; built here without TensorRT) labels the same on a CPU.
    from test_tensorrt_runtime import check_tensorrt_ep_model

    from edgeomni.engines.image_preprocess import preprocess_rgb
    from edgeomni.engines.session import EngineProfile, create_session

    ep_model = check_tensorrt_ep_model(verify_bundle(bundle), "image-labeller")
    session = create_session(bundle / ep_model.file, EngineProfile(("CPUExecutionProvider",)))
    batch = preprocess_rgb(np.asarray(data.chelsea()), labeller.size, labeller._mean, labeller._std)
    top1 = int(np.argmax(session.run(None, {session.get_inputs()[0].name: batch})[0][0]))
    assert "cat" in labeller.names[top1]

    failed = export(str(MOBILENET), "--out", str(tmp_path / "strict"), *quick, "--set", "gate.min=1.0",
                    "--set", "gate.max_excluded=0", "--set", "quantize.method=minmax",
                    "--set", "quantize.percentile=99.0")
    assert failed.returncode == 3, failed.stdout + failed.stderr
    assert "accuracy gate not met" in failed.stdout
    assert (tmp_path / "strict" / "report.md").is_file() and not (tmp_path / "strict" / "bundle").exists()
    shutil.rmtree(tmp_path / "ok", ignore_errors=True)


def test_agreement_where_fp32_is_decisive_counts_only_confident_inputs() -> None:
    """INT8 stand-in = FP32 logits + 1.0 on class 1: it flips exactly the inputs whose class-0 lead is under 1."""
    from edgeomni.export.steps.gate_accuracy import agreement_by_margin

    leads = np.array([0.2, 0.5, 0.9, 1.5, 3.0, 6.0], np.float32)  # logit lead of class 0 over class 1
    reference = np.stack([leads, np.zeros_like(leads), np.full_like(leads, -9.0)], axis=1)
    rows = agreement_by_margin(reference, reference + np.array([0.0, 1.0, 0.0], np.float32), margins=(0.0, 0.3, 0.9))
    # probability lead of class 0 (class 2 is negligible): 0.10, 0.24, 0.42, 0.64, 0.91, 0.995
    assert [(r["inputs"], r["top1_agreement"]) for r in rows] == [(6, 0.5), (4, 0.75), (2, 1.0)]


def test_tensorrt_profiles_cover_a_dynamic_batch_and_keep_fixed_dims() -> None:
    profile = profile_for("input", ["batch", 3, 224, 224], [1, 3, 224, 224], max_batch=8)
    assert profile == Profile("input", (1, 3, 224, 224), (1, 3, 224, 224), (8, 3, 224, 224))
    fixed = profile_for("input_values", [1, "samples"], [1, 16000], max_batch=4)
    assert fixed.min == fixed.max == (1, 16000)  # a fixed batch stays fixed; other symbolic dims take the example
    with pytest.raises(ExportError, match="dimension 1 is 3 in the model, 1 in the example"):
        profile_for("input", ["batch", 3, 224, 224], [1, 1, 224, 224], max_batch=8)


def test_tensorrt_profiles_of_varying_inputs_span_what_the_runtime_can_feed() -> None:
    from edgeomni.engines.ocr import TextDetector, TextRecognizer
    from edgeomni.export.steps.tensorrt_engine import profile_for_range

    # OCR crops: width varies per line; the profile must take every width preprocess can produce, not just the
    # calibration crops', and is tuned for their median.
    crops = [(1, 3, 48, w) for w in (96, 240, 320, 480, 1100)]
    rec = profile_for_range("x", ["n", 3, 48, "w"], crops, TextRecognizer.input_bounds({"height": 48}))
    assert rec == Profile("x", (1, 3, 48, 48), (1, 3, 48, 320), (1, 3, 48, 1536))
    det = profile_for_range("x", [1, 3, "h", "w"], [(1, 3, 544, 960), (1, 3, 736, 960)],
                            TextDetector.input_bounds({"long_side": 960}))
    assert (det.min, det.max) == ((1, 3, 32, 32), (1, 3, 960, 960)) and det.opt in ((1, 3, 544, 960), (1, 3, 736, 960))
    window = profile_for_range("input_features", [1, 80, "frames"], [(1, 80, 1500)] * 3 + [(1, 80, 3000)],
                               {2: (1500, 3000)})
    assert window == Profile("input_features", (1, 80, 1500), (1, 80, 1500), (1, 80, 3000))
    with pytest.raises(ExportError, match=r"dimension 2 is 48 in the model, 32\.\.48 in the examples"):
        profile_for_range("x", [1, 3, 48, "w"], [(1, 3, 32, 100), (1, 3, 48, 90)], {})
    with pytest.raises(ExportError, match="no example inputs"):
        profile_for_range("x", [1, 3, 48, "w"], [], {})


def test_tensorrt_build_progress_reports_phases_and_throttles_steps() -> None:
    import types

    from edgeomni.export.steps.tensorrt_engine import BuildProgress, _monitor

    now = [0.0]
    lines: list[str] = []
    progress = BuildProgress(lines.append, "det.onnx", every_s=5.0, clock=lambda: now[0])
    # What TensorRT's builder calls, through the same glue it gets (a stand-in base class: no TensorRT here)
    monitor = _monitor(types.SimpleNamespace(IProgressMonitor=type("Base", (), {"__init__": lambda self: None})),
                       progress)
    monitor.phase_start("Building engine", None, 3)
    monitor.phase_start("Tactic timing", "Building engine", 100)
    for step in range(100):
        now[0] += 0.5  # 50 s of tactic timing: one line per 5 s, not 100
        assert monitor.step_complete("Tactic timing", step) is True
    monitor.phase_finish("Tactic timing")
    monitor.phase_finish("Building engine")
    assert lines[0] == "    det.onnx: Building engine (3 steps)"
    assert lines[1] == "    det.onnx: Building engine > Tactic timing 10/100, 5 s"
    assert len(lines) == 1 + 10 + 1 and lines[-1] == "    det.onnx: Building engine done in 50.0 s"


def test_a_tensorrt_form_that_fails_the_gate_ships_nothing_and_says_why(default_bundle: Path, tmp_path: Path) -> None:
    from edgeomni.export.steps.tensorrt_target import build_tensorrt_target, describe

    gated: list[Path] = []

    def failing_gate(model: Path) -> dict:
        gated.append(model)
        return {"passed": False, "summary": "top1_agreement 0.5000 on 4 held-out inputs (gate 0.9)"}

    fp32 = default_bundle / "labeller" / "mobilenet_v2_fp32.onnx"  # (stands in for the symmetric copy too)
    shipped = tmp_path / "shipped.onnx"
    target = build_tensorrt_target(fp32, shipped, tmp_path, "m", TensorRtSettings(), lambda line: None, failing_gate)
    assert gated == [tmp_path / "m.tensorrt.onnx"] and target.engine is None and target.ep_onnx is None
    assert describe(target.record) == ("not built: its symmetric INT8 form fails the accuracy gate: top1_agreement "
                                       "0.5000 on 4 held-out inputs (gate 0.9)")
    # With the FP32 model at hand, the target falls back to it (FP16 on the GPU) instead of shipping nothing.
    fallback = build_tensorrt_target(fp32, shipped, tmp_path, "f", TensorRtSettings(), lambda line: None,
                                     failing_gate, fp32=fp32)
    assert fallback.ep_onnx == tmp_path / "f.tensorrt.onnx" and fallback.record["int8"] is False
    assert fallback.record["from"] == "FP32 ONNX, FP16 engine (mobilenet_v2_fp32.onnx)"
    assert describe(fallback.record).endswith("onnxruntime's TensorRT EP: f.tensorrt.onnx (FP16 from FP32: its "
                                              "symmetric INT8 form fails the accuracy gate: top1_agreement 0.5000 "
                                              "on 4 held-out inputs (gate 0.9))")
    shipped_form = build_tensorrt_target(fp32, fp32, tmp_path, "n", TensorRtSettings(), lambda line: None,
                                         failing_gate)  # the shipped ONNX is the TensorRT form: gated already
    assert len(gated) == 2 and shipped_form.ep_onnx is None and "accuracy gate" not in shipped_form.record["status"]


def test_tensorrt_settings_are_checked() -> None:
    with pytest.raises(ExportError, match="workspace_mb"):
        TensorRtSettings(workspace_mb=1).validate()
    with pytest.raises(ExportError, match="min <= opt <= max"):
        TensorRtSettings(profiles=[Profile("x", (4, 3), (1, 3), (8, 3))]).validate()


@pytest.mark.skipif(tensorrt_version() is not None, reason="TensorRT is installed here: the build path runs instead")
def test_tensorrt_target_without_tensorrt_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="TensorRT Python package is not installed"):
        build_engine(tmp_path / "model.onnx", tmp_path / "model.engine", TensorRtSettings())


def test_dynamic_int8_keeps_a_matmul_close_and_smaller(tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgeomni.export.steps.quantize_int8 import quantize_dynamic_int8

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((256, 256)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "dense",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 256])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 256])], [weight])
    fp32, int8 = tmp_path / "dense.onnx", tmp_path / "dense_int8.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), fp32)
    settings = quantize_dynamic_int8(fp32, int8)
    assert settings["activations"].startswith("uint8") and int8.stat().st_size < fp32.stat().st_size / 3
    x = rng.standard_normal((8, 256)).astype(np.float32)
    ref, got = (ort.InferenceSession(str(p)).run(None, {"x": x})[0] for p in (fp32, int8))
    cosine = (ref * got).sum(axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    assert cosine.min() > 0.99


def test_hugging_face_checkpoint_exports_through_optimum(tmp_path: Path) -> None:
    """A real transformers checkpoint directory (config.json + model.safetensors) through optimum's ONNX exporter,
    local files only. Its weights are seeded random ones: no model hub is reachable here, and the test is about
    the path (optimum export -> calibration -> INT8 -> cosine gate -> bundle), not about the labels."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("optimum.exporters.onnx")
    from transformers import MobileNetV2Config, MobileNetV2ForImageClassification

    torch.manual_seed(0)
    # initializer_range 0.25: with the default 0.02 the random activations vanish to ~1e-25 by the last layer
    config = MobileNetV2Config(depth_multiplier=0.35, image_size=96, num_labels=10, initializer_range=0.25)
    MobileNetV2ForImageClassification(config).eval().save_pretrained(tmp_path / "checkpoint")
    raw = base()
    raw.update(task="encoder", labels="", targets=["onnxruntime-cpu"], latency_runs=4)
    raw["source"] = {"kind": "huggingface", "path": str(tmp_path / "checkpoint"), "input_name": "pixel_values",
                     "input_shape": [1, 3, 96, 96]}
    raw["calibration"]["count"], raw["heldout"]["count"] = 8, 8
    raw["gate"] = {"metric": "cosine", "min": 0.9, "exclude_sensitive": False}
    result = export(str(write(tmp_path, raw)), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert "optimum ONNX export" in result.stdout
    component = report["components"]["mobilenet-v2"]
    assert component["gate"]["passed"] and component["gate"]["value"] >= 0.9
    assert (tmp_path / "out" / "bundle" / "manifest.json").is_file()


def test_where_tensorrt_exists_the_labeller_engine_gets_a_symmetric_qdq_model(
        default_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The classifier's GPU-side step, run here for real: with TensorRT present, the CPU bundle's uint8 QDQ model is
    quantized again with symmetric int8 activations and the same nodes kept FP32, for the engine to be built from."""
    import onnx

    from edgeomni.bundle import verify_bundle
    from edgeomni.datasets.calibration_photos import build_calibration_sets
    from edgeomni.export.steps import tensorrt_engine as tensorrt
    from edgeomni.export.tasks.classifier import _symmetric_qdq

    monkeypatch.setattr(tensorrt, "available", lambda: "10.16.1.11")
    bundle = verify_bundle(default_bundle)
    fp32 = bundle.path / bundle.manifest.by_role("image-labeller-fp32").file
    int8 = bundle.path / bundle.manifest.by_role("image-labeller").file
    calibration = build_calibration_sets(calibration_count=4, heldout_count=1).calibration
    kept = "/features/features.18/features.18.0/Conv"
    graph = onnx.load(str(fp32), load_external_data=False).graph
    assert kept in {n.name for n in graph.node}, [n.name for n in graph.node][-5:]
    symmetric = _symmetric_qdq(Recipe.load(MOBILENET), fp32, int8, calibration, [(kept, 1.0)], tmp_path, print)
    assert symmetric == tmp_path / "mobilenet-v2_int8_symmetric.onnx"
    graph = onnx.load(str(symmetric), load_external_data=False).graph
    zero_points = [onnx.numpy_helper.to_array(i) for i in graph.initializer if i.name.endswith("_zero_point")]
    assert zero_points and all(z.dtype in (np.int8, np.int32) and not z.any() for z in zero_points)
    produced_by = {out: n.op_type for n in graph.node for out in n.output}
    conv = {n.name: n for n in graph.node if n.op_type == "Conv"}
    assert produced_by.get(conv[kept].input[1]) != "DequantizeLinear"  # kept FP32: float weights
    assert sum(produced_by.get(c.input[1]) == "DequantizeLinear" for c in conv.values()) >= 50

"""PP-OCR export recipe: generated slide sets, per-component INT8 gated on unchanged held-out text,
a component that cannot hold the gate kept FP32, and the bundle read by the runtime's TextReader."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgeomni.datasets.slides import (
    RESOLUTIONS,
    TEMPLATES,
    VOCABULARY,
    check_disjoint,
    folder_slides,
    generated_slides,
    load_slides,
)
from edgeomni.errors import ExportError
from edgeomni.export.recipe import Recipe
from edgeomni.export.tasks.ocr import char_error_rate

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "export" / "ppocr_v4.yaml"
# Few slides keep the end-to-end runs near a minute; the BENCHMARKS figures come from the shipped recipe.
QUICK = ["--set", "calibration.count=4", "--set", "heldout.count=4", "--set", "latency_runs=3",
         "--set", "gate.max_excluded=2"]


def export(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgeomni.cli", "export", str(RECIPE), *args], capture_output=True,
                          text=True, timeout=600)


def test_shipped_recipe_is_valid() -> None:
    recipe = Recipe.load(RECIPE)
    assert recipe.task == "ocr" and recipe.gate.metric == "text_unchanged" and recipe.gate.min == 1.0
    assert sorted(recipe.source.components) == ["detector", "recognizer"]


def test_slide_sets_are_seeded_stratified_and_disjoint() -> None:
    first, again = generated_slides("calibration", 12, 7), generated_slides("calibration", 12, 7)
    assert [f["sha256"] for f in first.manifest["files"]] == [f["sha256"] for f in again.manifest["files"]]
    other_seed = generated_slides("calibration", 12, 8)
    assert [f["sha256"] for f in other_seed.manifest["files"]] != [f["sha256"] for f in first.manifest["files"]]
    # 12 slides over 3 templates x 4 resolutions: one per stratum.
    assert first.manifest["strata"] == {f"{t}/{w}x{h}": 1 for t in TEMPLATES for w, h in RESOLUTIONS}
    assert {s.image.shape[:2] for s in first.slides} == {(h, w) for w, h in RESOLUTIONS}
    assert all(s.image.dtype == np.uint8 and s.image.shape[2] == 3 and s.lines for s in first.slides)

    heldout = generated_slides("heldout", 12, 7)
    check_disjoint(first, heldout)
    held_words = {w.strip(",/") for s in heldout.slides for line in s.lines for w in line.split()}
    assert not held_words & set(VOCABULARY["calibration"]["words"])
    assert not any(c in line for s in heldout.slides for line in s.lines for c in ":-")  # calibration punctuation
    with pytest.raises(ExportError, match="also in the calibration set"):
        check_disjoint(first, again)
    with pytest.raises(ExportError, match="slides:calibration or slides:heldout"):
        generated_slides("training", 2, 1)


def test_a_folder_of_images_is_a_stratified_set(tmp_path: Path) -> None:
    from PIL import Image

    for stratum, count in (("a", 3), ("b", 1)):
        (tmp_path / stratum).mkdir()
        for i in range(count):
            Image.new("RGB", (64 + i, 32), (i * 40, 0, 0)).save(tmp_path / stratum / f"{i}.png")
    chosen = load_slides(str(tmp_path), 2, 3, "calibration", Path("/"))
    assert chosen.manifest["strata"] == {"a": 1, "b": 1}  # equal shares, not 2 from the bigger folder
    assert chosen.slides[0].lines == [] and chosen.slides[0].image.shape[2] == 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="holds no images"):
        folder_slides(tmp_path / "empty", 2, 3, "heldout")
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ExportError, match=r"broken\.png cannot be read"):
        folder_slides(tmp_path / "a", 10, 3, "heldout")


def test_char_error_rate() -> None:
    assert char_error_rate(["Field levels"], ["Field levels"]) == 0.0
    assert char_error_rate(["Field 1evels"], ["Field levels"]) == pytest.approx(1 / 12)
    assert char_error_rate(["", "ab"], ["abc", "ab"]) == pytest.approx(3 / 5)


def _check_bundle(out: Path) -> dict:
    """The bundle verifies, its OCR roles carry the precision the report chose, and the runtime reads with it."""
    from edgeomni.bundle import verify_bundle
    from edgeomni.engines.ocr import TextReader

    bundle = out / "bundle"
    report = json.loads((bundle / "report.json").read_text())
    verified = verify_bundle(bundle)
    for name, role in (("detector", "ocr-detector"), ("recognizer", "ocr-recognizer")):
        component = verified.manifest.by_role(role)
        chosen = report["components"][name]["chosen_precision"]
        assert component.precision == chosen == ("int8" if report["components"][name]["gate"]["passed"] else "fp32")
        ops = {n.op_type for n in onnx.load(str(bundle / component.file), load_external_data=False).graph.node}
        assert ("DequantizeLinear" in ops or "DynamicQuantizeLinear" in ops) == (chosen == "int8"), (name, ops)
    heldout = generated_slides("heldout", 4, 1234).slides
    reader = TextReader(verified)
    exact = [s for s in heldout if [line.text for line in reader(s.image)] == s.lines]
    assert exact, "the exported bundle read none of the held-out slides exactly"
    return report


@pytest.mark.slow
def test_recipe_end_to_end_keeps_int8_only_where_the_text_holds(tmp_path: Path) -> None:
    result = export("--out", str(tmp_path / "ok"), *QUICK, "--set", "targets=[onnxruntime-cpu, tensorrt]")
    assert result.returncode == 0, result.stdout + result.stderr
    report = _check_bundle(tmp_path / "ok")
    from edgeomni.export.steps.tensorrt_engine import available

    engines = report["tensorrt"]  # one per component, with profiles covering every shape preprocess can make
    assert engines["detector"]["profiles"][0]["min"] == [1, 3, 32, 32]
    assert engines["detector"]["profiles"][0]["max"] == [1, 3, 960, 960]
    assert engines["recognizer"]["profiles"][0]["max"] == [1, 3, 48, 1536]
    assert engines["detector"]["int8"] and engines["detector"]["from"].startswith("static INT8 QDQ")
    if available() is None:  # the target fails with its reason; the ONNX bundle is still written and read
        status = report["targets"]["tensorrt"]
        assert status.count("not built") == 2 and "not installed" in status
        assert report["targets"]["onnxruntime-cpu"].startswith("built")
    # The TensorRT EP's copy of the static INT8 detector: symmetric, float biases, the profiles the engine gets.
    from test_tensorrt_runtime import check_tensorrt_ep_model

    from edgeomni.bundle import verify_bundle

    verified = verify_bundle(tmp_path / "ok" / "bundle")
    ep_model = check_tensorrt_ep_model(verified, "ocr-detector")
    assert ep_model.precision == "int8" and ep_model.report["profiles"] == engines["detector"]["profiles"]
    assert ep_model.report["gate"]["metric"] == "text_unchanged" and ep_model.report["gate"]["passed"]
    from edgeomni.engines.backend import _tensorrt_ep_model

    # Whatever the recognizer ships (a TensorRT-form copy, or its FP32 ONNX as it is), the EP gets the profiles.
    _, options = _tensorrt_ep_model(verified, "ocr-recognizer")
    assert options["trt_profile_max_shapes"].endswith(":1x3x48x1536")
    assert report["fp32_pipeline"]["exact"] >= 0.75
    cal = report["calibration"]
    assert cal["count"] == 4 and cal["seed"] == 1234 and set(cal["inputs"]) == {"detector", "recognizer"}
    assert cal["inputs"]["recognizer"]["shape"]["count"] >= 4  # at least a line per slide, crops of several widths
    for name in ("detector", "recognizer"):
        component = report["components"][name]
        assert component["size_bytes"]["int8"] < component["size_bytes"]["fp32"]
        assert set(component["latency_ms"]["int8"]) == {"threads_1", "threads_2"}
        assert component["gate"]["rounds"][0]["excluded"] == 0
    shipped = report["shipped_pipeline"]  # both shipped components together, beyond the per-component gates
    assert shipped["precision"] == {n: c["chosen_precision"] for n, c in report["components"].items()}
    assert shipped["text_unchanged"] >= 0.75
    # The default settings keep the detector INT8 (its held-out text is unchanged).
    assert report["components"]["detector"]["chosen_precision"] == "int8"
    markdown = (tmp_path / "ok" / "report.md").read_text()
    assert "## detector" in markdown and "## recognizer" in markdown


@pytest.mark.slow
def test_where_tensorrt_exists_each_engine_gets_the_model_it_can_take(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU-side half of the target, run here for real up to TensorRT itself: the static INT8 detector is
    quantized again with symmetric int8 activations (TensorRT takes no zero points), an FP32 component goes as
    its FP32 ONNX in FP16, and a failed build leaves the ONNX bundle whole. The builder is replaced by one that
    records what it was handed and fails as a build can (test_tensorrt_simulated.py builds the engines for real
    on TensorRT's Python API and a simulated GPU, and reads slides through them)."""
    from edgeomni.export.runner import run_recipe
    from edgeomni.export.steps import tensorrt_engine as tensorrt

    handed: dict[str, tuple[Path, object, list[np.ndarray]]] = {}

    def no_gpu_build(onnx_path: Path, out: Path, settings: object, progress: object = None) -> dict:
        graph = onnx.load(str(onnx_path), load_external_data=False).graph  # (the work folder goes at the end)
        zero_points = [onnx.numpy_helper.to_array(i) for i in graph.initializer if i.name.endswith("_zero_point")]
        handed[Path(out).stem] = (Path(onnx_path), settings, zero_points)
        raise ExportError("target tensorrt: the engine build failed for this test (no GPU)")

    monkeypatch.setattr(tensorrt, "available", lambda: "10.16.1.11")
    monkeypatch.setattr(tensorrt, "build_engine", no_gpu_build)
    overrides = [o for o in QUICK if o != "--set"] + ["targets=[onnxruntime-cpu, tensorrt]"]
    bundle = run_recipe(Recipe.load(RECIPE, overrides), tmp_path / "out", progress=lambda line: None)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["components"]["detector"]["chosen_precision"] == "int8"
    for stem, name in (("ppocrv4_det", "detector"), ("ppocrv4_rec", "recognizer")):
        source, settings, zero_points = handed[stem]
        shipped = report["components"][name]
        static = shipped["chosen_precision"] == "int8" and shipped["quantization"]["format"] == "QDQ"
        if static and "fallback" not in report["tensorrt"][name]:
            assert source.name == f"{stem}.tensorrt.onnx" and settings.int8  # the EP's file, folded from symmetric
            # every zero point int8 and 0 (the int32 ones of ONNX Runtime's biases are folded away)
            assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)
            assert report["tensorrt"][name]["gate"]["passed"]
        else:  # FP32, dynamic INT8 (MatMulInteger: no TensorRT form), or a symmetric form that failed the gate:
            assert ".int8" not in source.name and not settings.int8 and settings.fp16  # the FP32 graph, FP16
            assert not static or report["tensorrt"][name]["gate"]["passed"] is False
    assert "engine build failed" in report["targets"]["tensorrt"]
    assert not any(p.suffix == ".engine" for p in bundle.rglob("*")) and (bundle / "manifest.json").is_file()


@pytest.mark.slow
def test_a_component_that_cannot_hold_the_gate_stays_fp32(tmp_path: Path) -> None:
    # Activations clipped at their 90th percentile really do wreck the text; with no exclusions allowed, each
    # component must fall back to FP32 and the export still succeed (the FP32 pipeline is fine).
    result = export("--out", str(tmp_path / "clipped"), *QUICK, "--set", "quantize.percentile=90",
                    "--set", "gate.max_excluded=0")
    assert result.returncode == 0, result.stdout + result.stderr
    report = _check_bundle(tmp_path / "clipped")
    fell_back = [n for n, c in report["components"].items() if c["chosen_precision"] == "fp32"]
    assert fell_back, report["components"]
    for name in fell_back:
        component = report["components"][name]
        assert component["gate"]["value"] < 1.0 and component["cer_int8_vs_fp32"] > 0
        assert component["reason"].startswith("FP32: with INT8 the text changed")
    recognizer = report["components"]["recognizer"]
    if recognizer["chosen_precision"] == "int8":  # static failed, so only the dynamic MatMul fallback can pass
        assert [r["mode"] for r in recognizer["gate"]["rounds"]] == ["static", "dynamic"]
        assert recognizer["quantization"]["left_float_op_types"] == ["Conv"]


def test_bad_components_are_named(tmp_path: Path) -> None:
    from edgeomni.export.runner import run_recipe

    detector = Recipe.load(RECIPE).source.components["detector"]
    swapped = Recipe.load(RECIPE, [f"source.components.recognizer={detector}"])
    with pytest.raises(ExportError, match="no 'character' dictionary"):  # a detector is not a recognizer
        run_recipe(swapped, tmp_path / "swapped", progress=lambda line: None)
    assert not (tmp_path / "swapped" / "bundle").exists() and (tmp_path / "swapped" / "report.md").is_file()
    one = Recipe.load(RECIPE, ["source.components={detector: x.onnx}"])
    with pytest.raises(ExportError, match=r"source.components: expected exactly \['detector', 'recognizer'\]"):
        run_recipe(one, tmp_path / "one", progress=lambda line: None)
    missing = Recipe.load(RECIPE, [f"source.components.recognizer={tmp_path / 'nope.onnx'}"])
    with pytest.raises(ExportError, match=r"source\.components\.recognizer: .*nope\.onnx does not exist"):
        run_recipe(missing, tmp_path / "missing", progress=lambda line: None)


def test_a_recipe_already_symmetric_hands_its_shipped_int8_models_to_tensorrt(
        default_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeomni.bundle import verify_bundle
    from edgeomni.export.steps import tensorrt_engine as tensorrt
    from edgeomni.export.tasks.ocr import _tensorrt_targets

    handed: dict[str, tuple[Path, bool]] = {}

    def no_gpu_build(onnx_path: Path, out: Path, settings: tensorrt.TensorRtSettings, progress: object = None) -> dict:
        handed[Path(out).stem] = (Path(onnx_path), settings.int8)
        raise ExportError("target tensorrt: the engine build failed for this test (no GPU)")

    monkeypatch.setattr(tensorrt, "available", lambda: "10.16.1.11")
    monkeypatch.setattr(tensorrt, "build_engine", no_gpu_build)
    bundle = verify_bundle(default_bundle)
    files = {name: bundle.path / bundle.manifest.by_role(f"ocr-{name}").file for name in ("detector", "recognizer")}
    report = {"targets": {}, "components": {
        "detector": {"chosen_precision": "int8", "quantization": {"format": "QDQ"}, "file": str(tmp_path / "d.onnx"),
                     "gate": {"excluded_nodes": []}},
        "recognizer": {"chosen_precision": "fp32", "quantization": {"format": "QDQ"}, "file": str(files["recognizer"]),
                       "gate": {"excluded_nodes": []}}}}
    shutil.copyfile(files["detector"], tmp_path / "d.onnx")  # stands in for the gated, already symmetric INT8 file
    recipe = Recipe.load(RECIPE, ["quantize.activations=int8-symmetric", "targets=[tensorrt]"])
    calibration = {"detector": [np.zeros((1, 3, 64, 96), np.float32)], "recognizer": [np.zeros((1, 3, 48, 200))]}
    targets = _tensorrt_targets(recipe, report, files, calibration, tmp_path, lambda line: None)
    assert all(t.engine is None for t in targets.values())
    assert all(t.ep_onnx is None for t in targets.values())  # FP32 stand-ins: the shipped files are the EP's form
    assert handed["ppocrv4_det"] == (tmp_path / "d.onnx", True)  # the shipped INT8 file itself, not re-quantized
    assert handed["ppocrv4_rec"] == (files["recognizer"], False)  # FP32 component: its FP32 graph, FP16 engine
    assert report["tensorrt"]["detector"]["profiles"][0]["opt"] == (1, 3, 64, 96)

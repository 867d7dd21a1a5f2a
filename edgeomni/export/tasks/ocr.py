"""PP-OCR det + rec: FP32 ONNX -> calibration through the runtime's own pre-processing -> INT8 per component ->
full-pipeline text gate -> bundle with, per component, INT8 only where the held-out text stayed the same.

Each component is gated alone: the held-out slides are read with that one component INT8 and the other FP32,
and the text must equal the all-FP32 text on at least `gate.min` of them. Sensitive nodes (worst SQNR on
calibration inputs) are kept FP32 round by round up to `gate.max_excluded`; then the recognizer gets one
dynamic MatMul-only INT8 try; a component that still fails is shipped FP32 and the report says why.
The recipe itself fails (GateFailed) only when the FP32 pipeline cannot read the held-out slides' known
text, since then the gate would compare against garbage.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import version_converter

from edgeomni.bundle.describe import describe_file
from edgeomni.datasets.slides import check_disjoint, load_slides
from edgeomni.engines.ocr import TextDetector, TextReader, TextRecognizer
from edgeomni.errors import ExportError
from edgeomni.export.bundle_writer import publish_bundle, recipe_manifest
from edgeomni.export.default.vision_models import (
    OCR_DETECTOR_PREPROCESS,
    OCR_RECOGNIZER_PREPROCESS,
    write_ocr_dictionary,
)
from edgeomni.export.model_source import resolve_path, source_provenance
from edgeomni.export.recipe import QuantizeSpec, Recipe
from edgeomni.export.recipe_report import GateFailed, Report
from edgeomni.export.steps.quantize_ragged import latency, quantize_component, ragged_sensitive_nodes, ragged_stats
from edgeomni.export.steps.tensorrt_engine import TensorRtSettings, model_input_dims, profile_for_range
from edgeomni.export.steps.tensorrt_target import (
    Gate,
    TensorRtTarget,
    build_tensorrt_target,
    describe,
    target_components,
)

COMPONENT_NAMES = ("detector", "recognizer")
ROLES = {"detector": "ocr-detector", "recognizer": "ocr-recognizer"}
FILES = {"detector": "ppocrv4_det", "recognizer": "ppocrv4_rec"}
MIN_OPSET = 13
# Below this share of exactly-read held-out slides the FP32 pipeline itself is broken (wrong model, wrong
# pre-processing, unreadable slides): gating INT8 against it would mean nothing.
FP32_MIN_EXACT = 0.5
# dynamic mode on the recognizer: Conv stays float (ConvInteger is slower than float Conv in ORT on x86),
# the MatMul/Gemm of the SVTR neck and the head become INT8.
DYNAMIC_FLOAT_OPS = {"detector": (), "recognizer": ("Conv",)}
# When static INT8 cannot hold the gate: measured, the recognizer's dynamic MatMul-only INT8 keeps every held-out
# text (its convolutions are what static INT8 perturbs); the detector's dynamic ConvInteger does not, and is slower.
DYNAMIC_FALLBACK = ("recognizer",)


@dataclass
class Variant:
    """Held-out texts read with one particular det/rec pair."""

    texts: list[list[str]]

    def unchanged(self, reference: Variant) -> float:
        return float(np.mean([a == b for a, b in zip(self.texts, reference.texts, strict=True)]))

    def cer(self, reference: list[list[str]]) -> float:
        return char_error_rate(["\n".join(t) for t in self.texts], ["\n".join(r) for r in reference])


def run(recipe: Recipe, work: Path, bundle: Path, report: Report) -> None:
    say = report.progress
    work.mkdir(parents=True, exist_ok=True)
    with report.step("FP32 PP-OCR detector + recognizer from source.components"):
        fp32 = _fp32_components(recipe, work)
        dictionary = work / "ppocr_keys.txt"
        say(f"    dictionary of {write_ocr_dictionary(fp32['recognizer'], dictionary)} characters")
    pipeline = Pipeline(dictionary, OCR_DETECTOR_PREPROCESS, OCR_RECOGNIZER_PREPROCESS)
    with report.step("calibration and held-out slides"):
        calibration = load_slides(recipe.calibration.images, recipe.calibration.count, recipe.calibration.seed,
                                  "calibration", recipe.base_dir)
        heldout = load_slides(recipe.heldout.images, recipe.heldout.count, recipe.heldout.seed, "heldout",
                              recipe.base_dir)
        check_disjoint(calibration, heldout)
        say(f"    {len(calibration.slides)} calibration, {len(heldout.slides)} held-out slides")
    with report.step(f"FP32 pipeline on {len(heldout.slides)} held-out slides vs their rendered text"):
        reference = pipeline.read(fp32["detector"], fp32["recognizer"], heldout.slides)
        truth = [s.lines for s in heldout.slides]
        known = all(truth)  # a folder of images has no ground truth: only INT8-vs-FP32 is measured then
        fp32_quality = {"exact": float(np.mean([a == b for a, b in zip(reference.texts, truth, strict=True)])),
                        "cer": reference.cer(truth)} if known else {"exact": None, "cer": None}
        report.data["fp32_pipeline"] = {**fp32_quality, "slides": len(truth), "ground_truth": known,
                                        "misread": [{"slide": s.name, "truth": s.lines, "read": r}
                                                    for s, r in zip(heldout.slides, reference.texts, strict=True)
                                                    if known and r != s.lines]}
        if known:
            say(f"    FP32 reads {fp32_quality['exact']:.0%} of the held-out slides exactly, "
                f"CER {fp32_quality['cer']:.4f}")
            if fp32_quality["exact"] < FP32_MIN_EXACT:
                raise GateFailed(f"the FP32 pipeline reads only {fp32_quality['exact']:.0%} of the held-out slides "
                                 f"exactly (needs {FP32_MIN_EXACT:.0%}): check source.components and the slides; "
                                 f"no INT8 gate is meaningful against it")
    with report.step("calibration inputs through the runtime's own pre-processing"):
        inputs = {split: pipeline.inputs(fp32["detector"], fp32["recognizer"], slides.slides)
                  for split, slides in (("calibration", calibration), ("heldout", heldout))}
        report.data["calibration"] = {**calibration.manifest, "inputs": {
            name: ragged_stats(tensors) for name, tensors in inputs["calibration"].items()},
            "preprocess": {"detector": "edgeomni.engines.ocr.TextDetector.preprocess",
                           "recognizer": "edgeomni.engines.ocr.TextRecognizer.preprocess on the boxes the FP32 "
                                         "detector finds (edgeomni.engines.ocr.TextReader.crops)"}}
        report.data["heldout"] = {k: v for k, v in heldout.manifest.items() if k != "files"}
        say("    " + ", ".join(f"{name}: {len(t)} inputs" for name, t in inputs["calibration"].items()))
    report.data["components"] = {}
    for name in COMPONENT_NAMES:
        report.data["components"][name] = ComponentGate(recipe, report, pipeline, fp32, reference,
                                                        heldout.slides, inputs, work).run(name)
    with report.step("the shipped pair together on the held-out slides (each was gated alone)"):
        chosen = {name: Path(c["file"]) for name, c in report.data["components"].items()}
        shipped = pipeline.read(chosen["detector"], chosen["recognizer"], heldout.slides)
        report.data["shipped_pipeline"] = {
            "precision": {name: c["chosen_precision"] for name, c in report.data["components"].items()},
            "text_unchanged": round(shipped.unchanged(reference), 4),
            "cer_vs_fp32": round(shipped.cer(reference.texts), 5),
            "cer_vs_truth": round(shipped.cer(truth), 5) if known else None}
        say(f"    text unchanged on {shipped.unchanged(reference):.0%} of the held-out slides")
    report.data["targets"] = {t: "built (the shipped ONNX pair)" for t in recipe.targets if t != "tensorrt"}
    targets: dict[str, TensorRtTarget] = {}
    if "tensorrt" in recipe.targets:
        def gate_tensorrt_form(name: str) -> Gate:
            """The component's TensorRT form, the other one FP32, on the held-out slides: the component gate."""
            def gate(model: Path) -> dict[str, Any]:
                pair = dict(fp32, **{name: model})
                got = pipeline.read(pair["detector"], pair["recognizer"], heldout.slides).unchanged(reference)
                return {"metric": "text_unchanged", "value": round(got, 4), "min": recipe.gate.min,
                        "passed": got >= recipe.gate.min,
                        "summary": f"text unchanged on {got:.0%} of {len(heldout.slides)} held-out slides (gate "
                                   f"{recipe.gate.min:.0%})"}
            return gate

        with report.step("TensorRT target of the shipped detector and recognizer (engines, the EP's ONNX)"):
            targets = _tensorrt_targets(recipe, report.data, fp32, inputs["calibration"], work, say,
                                        gate_tensorrt_form)
    with report.step("writing the bundle"):
        _write_bundle(recipe, bundle, work, dictionary, report.data, targets)
        say(f"    bundle at {bundle}")


class Pipeline:
    """The runtime's TextReader on loose files, so any det/rec pair (FP32 or INT8) can be read with."""

    def __init__(self, dictionary: Path, det_params: dict[str, Any], rec_params: dict[str, Any]) -> None:
        self.dictionary, self.det_params, self.rec_params = dictionary, det_params, rec_params

    def reader(self, detector: Path, recognizer: Path) -> Any:
        return TextReader.from_parts(TextDetector.from_model(detector, self.det_params),
                                     TextRecognizer.from_model(recognizer, self.rec_params, self.dictionary))

    def read(self, detector: Path, recognizer: Path, slides: list[Any]) -> Variant:
        reader = self.reader(detector, recognizer)
        return Variant([[line.text for line in reader(s.image)] for s in slides])

    def inputs(self, detector: Path, recognizer: Path, slides: list[Any]) -> dict[str, list[np.ndarray]]:
        """Detector tensors of every slide and recognizer tensors of every line the (FP32) detector finds."""
        reader = self.reader(detector, recognizer)
        return {"detector": [reader.detector.preprocess(s.image) for s in slides],
                "recognizer": [reader.recognizer.preprocess(crop) for s in slides for _, crop in reader.crops(s.image)]}


class ComponentGate:
    """Quantize one component, gate it in the full pipeline, exclude sensitive nodes, decide its precision."""

    def __init__(self, recipe: Recipe, report: Report, pipeline: Pipeline, fp32: dict[str, Path],
                 reference: Variant, heldout: list[Any], inputs: dict[str, dict[str, list[np.ndarray]]],
                 work: Path) -> None:
        self.recipe, self.report, self.pipeline, self.fp32 = recipe, report, pipeline, fp32
        self.reference, self.heldout, self.inputs, self.work = reference, heldout, inputs, work
        self.truth = [s.lines for s in heldout]

    def run(self, name: str) -> dict[str, Any]:
        recipe, report, say = self.recipe, self.report, self.report.progress
        quant, gate = recipe.quantize, recipe.gate
        fp32, int8 = self.fp32[name], self.work / f"{FILES[name]}.int8.onnx"
        calibration = self.inputs["calibration"][name]
        excluded: list[tuple[str, float]] = []
        rounds: list[dict[str, Any]] = []
        while True:
            settings, variant, value = self._round(name, quant, [n for n, _ in excluded], rounds)
            if (value >= gate.min or not gate.exclude_sensitive or quant.mode == "dynamic"
                    or len(excluded) >= gate.max_excluded):
                break
            with report.step(f"{name}: finding the nodes INT8 hurts most (calibration inputs)"):
                worst = ragged_sensitive_nodes(fp32, int8, calibration, _input_name(fp32), {n for n, _ in excluded},
                                               limit=min(2, gate.max_excluded - len(excluded)))
                if not worst:
                    break
                excluded += worst
                say(f"    keeping FP32: {', '.join(f'{n} ({sqnr} dB)' for n, sqnr in worst)}")
        if value < gate.min and quant.mode == "static" and name in DYNAMIC_FALLBACK:
            # Last resort before FP32: dynamic INT8 of the MatMul/Gemm only, Conv left float (no exclusions).
            excluded = []
            settings, variant, value = self._round(name, dataclasses.replace(quant, mode="dynamic"), [], rounds)
        passed = value >= gate.min
        with report.step(f"{name}: size and latency, FP32 vs INT8"):
            heldout = self.inputs["heldout"][name]
            lat = {kind: latency(path, heldout, recipe.latency_runs) for kind, path in (("fp32", fp32), ("int8", int8))}
        reason = (f"INT8 ({settings['format']}): the held-out text is unchanged on {value:.0%} of slides "
                  f"(gate {gate.min:.0%})" if passed else
                  f"FP32: with INT8 the text changed on {1 - value:.0%} of held-out slides (gate needs "
                  f"{gate.min:.0%} unchanged) after {len(rounds)} round(s), the last keeping {len(excluded)} "
                  f"node(s) FP32 (max_excluded {gate.max_excluded})")
        say(f"    {name} -> {reason}")
        return {
            "size_bytes": {"fp32": fp32.stat().st_size, "int8": int8.stat().st_size},
            "size_ratio": round(fp32.stat().st_size / int8.stat().st_size, 2),
            "latency_ms": lat,
            "latency_inputs": f"{len(heldout)} held-out {name} inputs (runtime pre-processing), batch 1",
            "quantization": settings,
            "gate": {"metric": "text_unchanged", "min": gate.min, "value": round(value, 4), "passed": passed,
                     "rounds": rounds, "excluded_nodes": [{"node": n, "sqnr_db": s} for n, s in excluded]},
            "cer_int8_vs_fp32": round(variant.cer(self.reference.texts), 5),
            "cer_int8_vs_truth": round(variant.cer(self.truth), 5) if all(self.truth) else None,
            "changed_slides": [{"fp32": r, "int8": t} for r, t in zip(self.reference.texts, variant.texts, strict=True)
                               if r != t][:10],
            "chosen_precision": "int8" if passed else "fp32",
            "reason": reason,
            "file": str(int8 if passed else fp32),
        }

    def _round(self, name: str, quant: QuantizeSpec, excluded: list[str],
               rounds: list[dict[str, Any]]) -> tuple[dict[str, Any], Variant, float]:
        """Quantize with `quant` keeping `excluded` FP32, then read the held-out slides with it."""

        report, fp32, int8 = self.report, self.fp32[name], self.work / f"{FILES[name]}.int8.onnx"
        with report.step(f"{name}: INT8 {quant.mode} ({quant.method}), {len(excluded)} node(s) kept FP32"):
            settings = quantize_component(fp32, int8, self.inputs["calibration"][name], _input_name(fp32), quant,
                                          excluded, self.work / f"{name}.ranges.json", report.progress,
                                          DYNAMIC_FLOAT_OPS[name])
        with report.step(f"{name}: text_unchanged on {len(self.truth)} held-out slides (other component FP32)"):
            variant = self._read_with(name, int8)
            value = variant.unchanged(self.reference)
            rounds.append({"mode": quant.mode, "excluded": len(excluded), "text_unchanged": round(value, 4),
                           "cer_vs_fp32": round(variant.cer(self.reference.texts), 5)})
            report.progress(f"    text unchanged on {value:.0%} of the held-out slides")
        return settings, variant, value

    def _read_with(self, name: str, int8: Path) -> Variant:
        pair = dict(self.fp32, **{name: int8})
        return self.pipeline.read(pair["detector"], pair["recognizer"], self.heldout)


def _tensorrt_targets(recipe: Recipe, report: dict[str, Any], fp32: dict[str, Path],
                      calibration: dict[str, list[np.ndarray]], work: Path, say: Callable[[str], None],
                      gate: Callable[[str], Gate] | None = None) -> dict[str, TensorRtTarget]:
    """The target per component, from what that component ships: a static INT8 component is quantized again with
    symmetric int8 activations (TensorRT takes no zero points; same ranges, same FP32 nodes) and built with
    explicit quantization; an FP32 or dynamic-INT8 one (MatMulInteger has no TensorRT form) from its FP32 ONNX in
    FP16. Profiles cover every shape the runtime's pre-processing can produce, tuned for the calibration median.
    The engine needs TensorRT here; the TensorRT EP's ONNX is written everywhere."""

    bounds = {"detector": TextDetector.input_bounds(OCR_DETECTOR_PREPROCESS),
              "recognizer": TextRecognizer.input_bounds(OCR_RECOGNIZER_PREPROCESS)}
    targets = {}
    for name in COMPONENT_NAMES:
        entry = report["components"][name]
        static_int8 = entry["chosen_precision"] == "int8" and entry["quantization"].get("format", "").startswith("QDQ")
        source = Path(entry["file"]) if static_int8 else fp32[name]  # (already symmetric if the recipe said so)
        if static_int8 and recipe.quantize.activations != "int8-symmetric":
            source = work / f"{FILES[name]}.int8_symmetric.onnx"
            excluded = [n["node"] for n in entry["gate"]["excluded_nodes"]]
            quantize_component(fp32[name], source, calibration[name], _input_name(fp32[name]),
                               dataclasses.replace(recipe.quantize, activations="int8-symmetric"), excluded,
                               work / f"{name}.ranges.json", say)
        input_name, dims = next(iter(model_input_dims(source).items()))
        profile = profile_for_range(input_name, dims, [t.shape for t in calibration[name]], bounds[name])
        settings = TensorRtSettings(int8=static_int8, profiles=[profile])
        targets[name] = build_tensorrt_target(  # (an FP32 source is the reference: nothing to gate)
            source, Path(entry["file"]), work, FILES[name], settings, say,
            gate(name) if gate and static_int8 else None, fp32[name] if static_int8 else None)
        if targets[name].ep_onnx is None:  # the EP runs the shipped FP32 ONNX: the profiles spare it rebuilds
            entry["tensorrt_profiles"] = targets[name].record["profiles"]
    report["tensorrt"] = {name: t.record for name, t in targets.items()}
    report["targets"]["tensorrt"] = "; ".join(f"{name} {describe(t.record)}" for name, t in targets.items())
    return targets


def char_error_rate(got: list[str], want: list[str]) -> float:
    """Total character edits (Levenshtein) over total reference characters."""
    edits = sum(_levenshtein(g, w) for g, w in zip(got, want, strict=True))
    return edits / max(1, sum(len(w) for w in want))


def _levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _input_name(model: Path) -> str:
    return onnx.load(str(model), load_external_data=False).graph.input[0].name


def _fp32_components(recipe: Recipe, work: Path) -> dict[str, Path]:
    given = recipe.source.components
    if sorted(given) != sorted(COMPONENT_NAMES):
        raise ExportError(f"source.components: expected exactly {list(COMPONENT_NAMES)} (ONNX files), "
                          f"got {sorted(given)}")
    fp32 = {}
    for name in COMPONENT_NAMES:
        path = resolve_path(recipe, given[name], f"source.components.{name}")
        if path.suffix != ".onnx" or not path.is_file():
            raise ExportError(f"source.components.{name}: expected an .onnx file, got {path}")
        fp32[name] = _at_least_opset(path, work / f"{FILES[name]}.onnx")
    return fp32


def _at_least_opset(source: Path, out: Path, opset: int = MIN_OPSET) -> Path:
    """Copy the model, converted to `opset` if older: PP-OCR ships opset 12, and per-channel QDQ needs the
    `axis` attribute of DequantizeLinear (opset 13); without it ORT writes a graph it then refuses to load."""

    model = onnx.load(str(source))
    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if current >= opset:
        shutil.copyfile(source, out)
        return out
    try:
        model = version_converter.convert_version(model, opset)
        onnx.checker.check_model(model)
    except Exception as exc:  # the converter raises several types; name the file and the opsets
        raise ExportError(f"{source}: cannot convert from opset {current} to {opset} for per-channel INT8: "
                          f"{exc}") from None
    onnx.save(model, str(out))
    return out


def _write_bundle(recipe: Recipe, bundle: Path, work: Path, dictionary: Path, report: dict[str, Any],
                  targets: dict[str, TensorRtTarget]) -> None:
    staging = bundle.with_name(bundle.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "ocr").mkdir(parents=True)
    preprocess = {"detector": OCR_DETECTOR_PREPROCESS, "recognizer": OCR_RECOGNIZER_PREPROCESS}
    components = []
    for name in COMPONENT_NAMES:
        entry = report["components"][name]
        source = Path(entry["file"])
        relpath = f"ocr/{source.name}"
        shutil.copyfile(source, staging / relpath)
        provenance = {**source_provenance(recipe, name), "export": f"edgeomni export: {entry['reason']}"}
        components.append(describe_file(staging, relpath, name=f"ocr_{name}", role=ROLES[name],
                                        precision=entry["chosen_precision"], license="Apache-2.0",
                                        provenance=provenance, preprocess=preprocess[name],
                                        report={k: v for k, v in entry.items() if k != "file"}))
        if name in targets:
            components += target_components(staging, "ocr", targets[name], name=f"ocr_{name}", role=ROLES[name],
                                            license="Apache-2.0", provenance=provenance, preprocess=preprocess[name])
    shutil.copyfile(dictionary, staging / "ocr" / dictionary.name)
    components.append(describe_file(staging, f"ocr/{dictionary.name}", name="ocr_dictionary", role="ocr-dictionary",
                                    precision="n/a", license="Apache-2.0",
                                    provenance={**source_provenance(recipe, "recognizer"),
                                                "export": "ONNX metadata 'character' of the recognizer"}))
    publish_bundle(staging, bundle, recipe_manifest(recipe, components, report["calibration"],
                                                    "PP-OCR det/rec, INT8 only where the held-out text stayed "
                                                    "unchanged."))

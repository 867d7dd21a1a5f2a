"""Image classifiers and encoders: source -> FP32 ONNX -> image calibration -> static/dynamic INT8 ->
gate (top-1 agreement or cosine, with sensitive-node exclusion) -> size/latency -> TensorRT -> bundle."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edgeomni.bundle.describe import describe_file
from edgeomni.datasets.calibration_photos import augment
from edgeomni.datasets.media_sets import load_image_set, unlabeled_images
from edgeomni.datasets.photo_sets import cutouts, paste_cutout
from edgeomni.engines.image_preprocess import IMAGENET_MEAN, IMAGENET_STD, preprocess_rgb
from edgeomni.errors import ExportError
from edgeomni.export.bundle_writer import publish_bundle, recipe_manifest
from edgeomni.export.model_source import resolve_path, source_provenance
from edgeomni.export.recipe import Recipe
from edgeomni.export.recipe_report import REPORT_MD, GateFailed, Report
from edgeomni.export.steps.finetune import FinetuneConfig, finetune_for_int8
from edgeomni.export.steps.gate_accuracy import agreement_by_margin, fp32_self_agreement, score, sensitive_nodes
from edgeomni.export.steps.onnx_export import export_fp32
from edgeomni.export.steps.quantize_int8 import latency_ms, logits, quantize_dynamic_int8, quantize_int8
from edgeomni.export.steps.tensorrt_engine import TensorRtSettings, model_input_dims, profile_for
from edgeomni.export.steps.tensorrt_target import (
    Gate,
    TensorRtTarget,
    build_tensorrt_target,
    describe,
    target_components,
)


def run(recipe: Recipe, work: Path, bundle: Path, report: Report) -> None:
    say = report.progress
    fp32, int8 = work / f"{recipe.name}_fp32.onnx", work / f"{recipe.name}_int8.onnx"
    with report.step(f"source model ({recipe.source.kind}) -> FP32 ONNX"):
        export_fp32(recipe, fp32, say)
    with report.step("calibration and held-out sets"):
        calibration = load_image_set(recipe, recipe.calibration, "calibration")
        heldout = load_image_set(recipe, recipe.heldout, "heldout")
        overlap = _overlap(calibration.manifest, heldout.manifest)
        if overlap:
            raise ExportError(f"heldout.images: {len(overlap)} file(s) are also in the calibration set "
                              f"({overlap[:3]}...); the gate must be measured on data the calibrator never saw")
        report.data["calibration"] = calibration.manifest
        report.data["heldout"] = {k: v for k, v in heldout.manifest.items() if k != "inputs"}
        say(f"    {len(calibration.tensors)} calibration, {len(heldout.tensors)} held-out inputs")
    reference = logits(fp32, heldout.tensors)  # FP32's answers: every gate figure below is measured against them
    quant, gate = recipe.quantize, recipe.gate
    excluded: list[tuple[str, float]] = []
    rounds: list[dict[str, Any]] = []
    source = fp32  # what gets quantized: the FP32 graph, or its fine-tuned twin once `finetune` has run
    finetuned: dict[str, Any] | None = None

    def quantize(kept_fp32: list[str]) -> dict[str, Any]:
        if quant.mode == "dynamic":
            return quantize_dynamic_int8(source, int8, kept_fp32, quant.per_channel)
        # The ranges cache also keeps the fine-tuned twin on the activation grid it was trained for.
        return quantize_int8(source, int8, calibration.tensors, method=quant.method, percentile=quant.percentile,
                             activations=quant.activations, input_name=recipe.source.input_name,
                             nodes_to_exclude=kept_fp32, ranges_cache=work / "ranges.json", progress=say)

    while True:
        with report.step(f"INT8 {quant.mode} quantization ({quant.method}, {len(excluded)} nodes kept FP32)"):
            settings = quantize([n for n, _ in excluded])
        if "finetune" in recipe.steps and source == fp32:
            spec = recipe.finetune
            with report.step(f"quantization-aware fine-tuning ({spec.steps} steps, KL to the FP32 model)"):
                # what fine-tuning is measured against
                plain = score(gate.metric, reference, logits(int8, heldout.tensors))
                rounds.append({"excluded": len(excluded), "finetuned": False, gate.metric: round(plain, 4)})
                say(f"    held-out {gate.metric} before fine-tuning: {plain:.4f}")
                source, finetuned = _finetune(recipe, fp32, int8, calibration, heldout.manifest, work, say)
                settings = quantize([n for n, _ in excluded])
        with report.step(f"accuracy gate ({gate.metric} >= {gate.min}) on {len(heldout.tensors)} held-out inputs"):
            answers = logits(int8, heldout.tensors)
            value = score(gate.metric, reference, answers)
            rounds.append({"excluded": len(excluded), gate.metric: round(value, 4)})
            say(f"    {gate.metric} {value:.4f}")
        if value >= gate.min or not gate.exclude_sensitive or len(excluded) >= gate.max_excluded:
            break
        with report.step("finding the nodes INT8 hurts most"):
            batch = min(len(calibration.tensors), 8)
            # Chosen on calibration inputs: the held-out set only judges, it never picks what to keep in FP32.
            worst = sensitive_nodes(fp32, int8, calibration.tensors[:batch], recipe.source.input_name,
                                    {n for n, _ in excluded}, limit=min(2, gate.max_excluded - len(excluded)))
            if not worst:
                break
            excluded += worst
            say(f"    keeping FP32: {', '.join(f'{n} ({sqnr} dB)' for n, sqnr in worst)}")
    size_ratio = fp32.stat().st_size / int8.stat().st_size
    passed = value >= gate.min and size_ratio >= gate.min_size_ratio
    with report.step("size and latency, FP32 vs INT8"):
        runs = recipe.latency_runs
        report.data["components"] = {recipe.name: {
            "size_bytes": {"fp32": fp32.stat().st_size, "int8": int8.stat().st_size},
            "size_ratio": round(size_ratio, 2),
            "latency_ms": {kind: {f"threads_{n}": latency_ms(path, heldout.tensors, threads=n, runs=runs)
                                  for n in (1, 2)} for kind, path in (("fp32", fp32), ("int8", int8))},
            "quantization": settings | ({"finetune": finetuned} if finetuned else {}),
            "gate": {"metric": gate.metric, "min": gate.min, "value": round(value, 4), "passed": passed,
                     "rounds": rounds, "excluded_nodes": [{"node": n, "sqnr_db": s} for n, s in excluded],
                     "min_size_ratio": gate.min_size_ratio},
        }}
        if gate.metric == "top1_agreement":  # what the figure means: FP32 against itself on imperceptibly noisier input
            floor = fp32_self_agreement(fp32, heldout.tensors, reference)
            decisive = agreement_by_margin(reference, answers)
            report.data["components"][recipe.name]["gate"] |= {"fp32_self_agreement_1_grey_level": floor,
                                                               "agreement_where_fp32_decisive": decisive}
            say(f"    FP32 vs FP32 with 1 grey level of input noise: top-1 agreement {floor:.4f}")
            say("    where FP32's top-1 leads by >= " + ", ".join(
                f"{d['min_margin']}: {d['top1_agreement']} on {d['inputs']}" for d in decisive))
    report.data["targets"] = _targets(recipe)
    if not passed:
        kept = (f"after keeping {len(excluded)} node(s) in FP32 (max_excluded {gate.max_excluded})"
                if gate.exclude_sensitive else "(gate.exclude_sensitive is off)")
        why = (f"{gate.metric} {value:.4f} < {gate.min} {kept}" if value < gate.min else
               f"INT8 is {size_ratio:.2f}x smaller than FP32, the gate wants {gate.min_size_ratio}x")
        raise GateFailed(f"accuracy gate not met: {why}; no bundle written, see {report.out / REPORT_MD}")
    target = None
    if "tensorrt" in recipe.targets:
        def gate_tensorrt_form(model: Path) -> dict[str, Any]:
            got = score(gate.metric, reference, logits(model, heldout.tensors))
            return {"metric": gate.metric, "value": round(got, 4), "min": gate.min, "passed": got >= gate.min,
                    "summary": f"{gate.metric} {got:.4f} on {len(heldout.tensors)} held-out inputs (gate {gate.min}, "
                               f"the CPU model: {value:.4f})"}

        with report.step("TensorRT target: the engine (where TensorRT exists) and the TensorRT EP's ONNX"):
            target = _tensorrt(recipe, _symmetric_qdq(recipe, source, int8, calibration.tensors, excluded, work, say),
                               source, int8, work, report.data, say, gate_tensorrt_form)
    with report.step("writing the bundle"):
        _write_bundle(recipe, bundle, fp32, int8, report.data, target)
        say(f"    bundle at {bundle}")


def _finetune(recipe: Recipe, fp32: Path, int8: Path, calibration: Any, heldout: dict[str, Any], work: Path,
              say: Callable[[str], None]) -> tuple[Path, dict[str, Any]]:
    """Train the weights on the INT8 model's grid to match the FP32 model; returns the FP32 twin to quantize."""

    spec = recipe.finetune
    size = recipe.source.input_shape[-1]
    extra: list[Any] = []
    if spec.images:
        extra, extra_manifest = unlabeled_images(spec.images, recipe, "finetune.images")
        overlap = _overlap(extra_manifest, heldout)
        if overlap:
            raise ExportError(f"finetune.images: {len(overlap)} image(s) are also in the held-out set "
                              f"({overlap[:3]}...); the gate must be measured on images training never saw")
        say(f"    {len(extra)} extra training images from {extra_manifest['source']}")
    photos = list(calibration.photos) + extra
    if spec.views and not photos:
        raise ExportError("finetune.views: the calibration set kept no photos to make views from; set views: 0")
    rng = np.random.default_rng(spec.seed)
    objects = cutouts(spec.cutouts.split(":", 1)[1]) if spec.cutouts else []
    views = [preprocess_rgb(image, size, IMAGENET_MEAN, IMAGENET_STD)[0] for image in extra]
    for i in range(spec.views):
        view = augment(photos[i % len(photos)], rng)
        if objects and i % 2:
            view = paste_cutout(objects[int(rng.integers(len(objects)))], view, rng)
        views.append(preprocess_rgb(view, size, IMAGENET_MEAN, IMAGENET_STD)[0])
    images = np.concatenate([calibration.tensors, np.stack(views)]) if views else calibration.tensors
    tuned = work / f"{recipe.name}_finetuned_fp32.onnx"
    config = FinetuneConfig(steps=spec.steps, batch=min(spec.batch, len(images)), lr=spec.lr,
                            temperature=spec.temperature, seed=spec.seed,
                            progress_every=max(1, min(25, spec.steps // 10)))
    record = finetune_for_int8(fp32, int8, tuned, images, config, progress=say)
    record["calibration_inputs"], record["augmented_views"] = len(calibration.tensors), spec.views
    record["extra_images"] = f"{len(extra)} ({spec.images})" if extra else "none"
    record["cutouts"] = f"{len(objects)} cut-out photos ({spec.cutouts}), every other view" if objects else "none"
    return tuned, record


def _overlap(calibration: dict[str, Any], heldout: dict[str, Any]) -> list[str]:
    digests = {f["sha256"] for f in calibration.get("files", [])}
    return [f["file"] for f in heldout.get("files", []) if f["sha256"] in digests]


def _targets(recipe: Recipe) -> dict[str, str]:
    offered = set(ort.get_available_providers())
    status = {}
    for target in recipe.targets:
        if target == "onnxruntime-cpu":
            status[target] = "built (QDQ ONNX)"
        elif target == "onnxruntime-cuda":
            status[target] = ("built (same QDQ ONNX)" if "CUDAExecutionProvider" in offered else
                              "the QDQ ONNX runs there; not checked here (this onnxruntime has no CUDA provider)")
        else:
            status[target] = "not attempted: built only once the accuracy gate holds"
    return status


def _symmetric_qdq(recipe: Recipe, fp32: Path, int8: Path, calibration: Any, excluded: list[tuple[str, float]],
                   work: Path, say: Callable[[str], None]) -> Path:
    """TensorRT takes only symmetric int8 Q/DQ (zero point 0); the CPU bundle's uint8-asymmetric activations
    (faster on x86) are quantized again for it, same method and excluded nodes."""

    quant = recipe.quantize
    if quant.mode != "static" or quant.activations == "int8-symmetric":
        return int8
    symmetric = work / f"{recipe.name}_int8_symmetric.onnx"
    quantize_int8(fp32, symmetric, calibration, method=quant.method, percentile=quant.percentile,
                  activations="int8-symmetric", input_name=recipe.source.input_name,
                  nodes_to_exclude=[n for n, _ in excluded], progress=say)
    return symmetric


def _tensorrt(recipe: Recipe, model: Path, fp32: Path, shipped: Path, work: Path, report: dict[str, Any],
              say: Callable[[str], None], gate: Gate) -> TensorRtTarget:
    """The engine where TensorRT is installed (elsewhere the report says why and the export goes on) and the
    TensorRT EP's ONNX everywhere. A static QDQ model is built with explicit quantization; a dynamic-INT8 one has
    no TensorRT form, so its FP32 twin goes as FP16."""

    static = recipe.quantize.mode == "static"
    source = model if static else fp32
    input_name, dims = next(iter(model_input_dims(source).items()))
    settings = TensorRtSettings(int8=static, profiles=[profile_for(input_name, dims, recipe.source.input_shape, 8)])
    target = build_tensorrt_target(source, shipped, work, recipe.name, settings, say, gate, fp32 if static else None)
    report["targets"]["tensorrt"] = describe(target.record)
    report["tensorrt"] = target.record
    return target


def _write_bundle(recipe: Recipe, bundle: Path, fp32: Path, int8: Path, report: dict[str, Any],
                  target: TensorRtTarget | None = None) -> None:
    staging = bundle.with_name(bundle.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "models").mkdir(parents=True)
    shutil.copyfile(fp32, staging / "models" / fp32.name)
    shutil.copyfile(int8, staging / "models" / int8.name)
    component = report["components"][recipe.name]
    provenance = {**source_provenance(recipe), "source": recipe.source.kind,
                  "export": "edgeomni export: torch.onnx / ONNX + onnxruntime static QDQ"}
    preprocess = {"size": recipe.source.input_shape[-1], "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                  "layout": "NCHW", "colour": "RGB", "function": "edgeomni.engines.image_preprocess.preprocess_rgb"}
    role = "image-labeller" if recipe.task == "image-classification" else "encoder"
    components = [
        describe_file(staging, f"models/{int8.name}", name=recipe.name, role=role, precision="int8",
                      license="see source", provenance=provenance, preprocess=preprocess, report=component),
        describe_file(staging, f"models/{fp32.name}", name=f"{recipe.name}_fp32", role=f"{role}-fp32",
                      precision="fp32", license="see source", provenance=provenance, preprocess=preprocess),
    ]
    if target is not None:
        components += target_components(staging, "models", target, name=recipe.name, role=role,
                                        license="see source", provenance=provenance, preprocess=preprocess)
    if recipe.labels:
        labels = resolve_path(recipe, recipe.labels, "labels")
        shutil.copyfile(labels, staging / "models" / "labels.txt")
        components.append(describe_file(staging, "models/labels.txt", name="labels", role="image-labels",
                                        precision="n/a", license="see source", provenance=provenance))
    publish_bundle(staging, bundle, recipe_manifest(recipe, components, report["calibration"]))

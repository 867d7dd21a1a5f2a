"""Face detector and PP-OCR det/rec for the default bundle, taken out of pinned wheels at build time.

- Faces: MediaPipe's BlazeFace short-range .tflite from the mediapipe wheel, converted to ONNX with
  tflite2onnx (an export-time dependency). mediapipe itself is never imported (it needs numpy<2): the
  wheel is installed with --no-deps as a data package, like the other weight packages.
- OCR: PP-OCRv4 detector + recognizer ONNX files from rapidocr-onnxruntime, copied as they are; the
  recognizer's character dictionary, stored in its ONNX metadata, is written beside it as a text file
  so the runtime reads it without parsing the model.

Both stay FP32: the face model is 0.4 MB and ~1 ms per frame, and INT8 OCR was not shown to keep the
recognised slide text unchanged (see docs/ARCHITECTURE.md, "Video path"), so it is not shipped here; the
recipe export/ppocr_v4.yaml (edgeomni/export/tasks/ocr.py) builds INT8 per component where the text holds.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import shutil
from collections.abc import Callable
from pathlib import Path

from edgeomni import __version__
from edgeomni.bundle.describe import describe_file
from edgeomni.bundle.manifest import Component
from edgeomni.errors import ExportError
from edgeomni.export.default.glyphs import build_glyph_atlas
from edgeomni.pinned import PinnedFile, locate, provenance

FACE_SHORT_RANGE = PinnedFile("mediapipe", "0.10.21",
                              "mediapipe/modules/face_detection/face_detection_short_range.tflite", "Apache-2.0")
OCR_DETECTOR = PinnedFile("rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
                          "Apache-2.0")
OCR_RECOGNIZER = PinnedFile("rapidocr-onnxruntime", "1.4.4",
                            "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx", "Apache-2.0")
VISION_PINNED = (FACE_SHORT_RANGE, OCR_DETECTOR, OCR_RECOGNIZER)

# BlazeFace short range (MediaPipe face_detection_short_range.pbtxt): 128x128 RGB in [-1, 1],
# SSD anchors at strides 8 (2 per cell) and 16 (6 per cell), fixed size.
FACE_PREPROCESS = {"size": 128, "range": [-1.0, 1.0], "layout": "NCHW", "colour": "RGB",
                   "resize": "square tiles of the shorter side, nearest", "anchor_strides": [8, 16],
                   "anchors_per_cell": [2, 6],
                   "min_score": 0.7, "iou_merge": 0.3, "function": "edgeomni.engines.faces.FaceDetector"}
OCR_DETECTOR_PREPROCESS = {"long_side": 960, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "colour": "BGR",
                           "threshold": 0.3, "box_threshold": 0.5, "unclip_ratio": 1.6,
                           "function": "edgeomni.engines.ocr.TextDetector"}
OCR_RECOGNIZER_PREPROCESS = {"height": 48, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "colour": "BGR",
                             "decode": "CTC greedy, blank=0, dictionary + trailing space",
                             "function": "edgeomni.engines.ocr.TextRecognizer"}


def convert_blazeface(tflite: Path, out: Path) -> None:
    try:
        import tflite2onnx
    except ImportError:
        raise ExportError("converting the face detector needs tflite2onnx: "
                          "pip install tflite2onnx==0.4.1 tflite==2.18.0 (see requirements/dev.txt)") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    # tflite2onnx prints a warning per float16 constant (dequantized to float32 in the graph): noise.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        tflite2onnx.convert(str(tflite), str(out))
    if not out.is_file():
        raise ExportError(f"tflite2onnx did not write {out} from {tflite}")


def write_ocr_dictionary(recognizer: Path, out: Path) -> int:
    import onnx

    model = onnx.load(str(recognizer), load_external_data=False)
    meta = {entry.key: entry.value for entry in model.metadata_props}
    if "character" not in meta:
        raise ExportError(f"{recognizer}: no 'character' dictionary in the ONNX metadata (keys: {sorted(meta)})")
    characters = meta["character"].splitlines()
    out.write_text("\n".join(characters) + "\n", encoding="utf-8")
    return len(characters)


def build_vision_components(bundle: Path, progress: Callable[[str], None]) -> list[Component]:
    """Convert/copy the face and OCR engines into ``bundle`` and describe them."""
    faces_rel = "faces/blazeface_short_range.onnx"
    convert_blazeface(locate(FACE_SHORT_RANGE), bundle / faces_rel)
    (bundle / "ocr").mkdir(parents=True, exist_ok=True)
    det_rel, rec_rel, dict_rel = "ocr/ppocrv4_det.onnx", "ocr/ppocrv4_rec.onnx", "ocr/ppocr_keys.txt"
    shutil.copyfile(locate(OCR_DETECTOR), bundle / det_rel)
    shutil.copyfile(locate(OCR_RECOGNIZER), bundle / rec_rel)
    count = write_ocr_dictionary(bundle / rec_rel, bundle / dict_rel)
    glyphs_rel = "overlay/glyphs.npz"
    build_glyph_atlas(bundle / glyphs_rel)
    progress(f"    BlazeFace short-range -> ONNX; PP-OCRv4 det + rec copied; dictionary of {count} characters; "
             f"glyph atlas for burned-in captions")
    return [
        describe_file(bundle, faces_rel, name="faces", role="face-detector", precision="fp32",
                      license=FACE_SHORT_RANGE.license,
                      provenance=provenance(FACE_SHORT_RANGE, export="tflite2onnx 0.4.1 (float16 weights -> fp32)"),
                      preprocess=FACE_PREPROCESS),
        describe_file(bundle, det_rel, name="ocr_detector", role="ocr-detector", precision="fp32",
                      license=OCR_DETECTOR.license, provenance=provenance(OCR_DETECTOR),
                      preprocess=OCR_DETECTOR_PREPROCESS),
        describe_file(bundle, rec_rel, name="ocr_recognizer", role="ocr-recognizer", precision="fp32",
                      license=OCR_RECOGNIZER.license, provenance=provenance(OCR_RECOGNIZER),
                      preprocess=OCR_RECOGNIZER_PREPROCESS),
        describe_file(bundle, dict_rel, name="ocr_dictionary", role="ocr-dictionary", precision="n/a",
                      license=OCR_RECOGNIZER.license,
                      provenance=provenance(OCR_RECOGNIZER, source="ONNX metadata 'character' of the recognizer")),
        describe_file(bundle, glyphs_rel, name="glyphs", role="overlay-glyphs", precision="n/a",
                      license="CC0-1.0",
                      provenance={"package": "pillow", "version": importlib.metadata.version("pillow"),
                                  "file": "ImageFont.load_default",
                                  "export": f"edgeomni {__version__} edgeomni.export.glyphs (ASCII 32-126, 20 px)"}),
    ]


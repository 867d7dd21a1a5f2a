"""One model's latency per backend: ORT CPU vs ORT CUDA EP vs ORT TensorRT EP vs the bundle's TensorRT engine.

    python -m edgeomni.bench.tensorrt_latency --bundle DIR [--role ROLE] [--runs 200] [--json PATH]

Each backend is opened through the engine layer with that backend forced (`edgeomni.engines.backend`), so a
backend that cannot run here is reported with the engine layer's reason instead of a figure. Latency is per
`run` call at batch 1 after warm-up, with `time.perf_counter()`, on real inputs made by the runtime's own
pre-processing: photos for the image labeller (top-1 compared with ORT CPU), generated slides for the OCR
detector and their text lines for the recognizer, speech (15 s window) for the Whisper encoder (cosine of the
output with ORT CPU's, the worst input). Used by scripts/gpu_tensorrt_check.sh on a GPU machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeomni.bundle import VerifiedBundle, verify_bundle
from edgeomni.datasets.audio_sets import calibration_audio
from edgeomni.datasets.slides import generated_slides
from edgeomni.engines.backend import open_engine
from edgeomni.engines.image_preprocess import preprocess_rgb
from edgeomni.engines.ocr import TextReader
from edgeomni.engines.session import EngineProfile
from edgeomni.engines.whisper_asr import WhisperAsr
from edgeomni.errors import EngineError
from edgeomni.telemetry import percentiles

BACKENDS = ("cpu", "cuda", "tensorrt-ep", "tensorrt")
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera", "cat")
ROLES = ("image-labeller", "ocr-detector", "ocr-recognizer", "asr-whisper-encoder")
WARMUP = 10


def _batches(bundle: VerifiedBundle, role: str) -> list[np.ndarray]:
    """Inputs for `role`, made the way the runtime makes them (bench only: scikit-image, espeak-ng, slides)."""
    params = bundle.manifest.by_role(role).preprocess
    if role == "image-labeller":
        from skimage import color, data

        photos = [np.asarray(getattr(data, name)()) for name in PHOTOS]
        photos = [(color.gray2rgb(p) if p.ndim == 2 else p[..., :3]).astype(np.uint8) for p in photos]
        return [preprocess_rgb(p, int(params["size"]), tuple(params["mean"]), tuple(params["std"])) for p in photos]
    if role.startswith("ocr-"):
        reader, slides = TextReader(bundle), generated_slides("heldout", 6, 1234).slides
        if role == "ocr-detector":
            return [reader.detector.preprocess(s.image) for s in slides]
        return [reader.recognizer.preprocess(crop) for s in slides for _, crop in reader.crops(s.image)][:12]
    if role == "asr-whisper-encoder":
        asr = WhisperAsr(bundle)
        clips, _ = calibration_audio("builtin", 6, 0, Path, lambda line: None)
        return [asr.features(clip)[None][:, :, : asr.window_frames(len(clip))] for clip in clips]
    raise EngineError(f"--role {role!r}: expected one of {', '.join(ROLES)}")


def _agreement(outputs: list[np.ndarray], reference: list[np.ndarray], role: str) -> str:
    if role == "image-labeller":
        agree = sum(int(np.argmax(a)) == int(np.argmax(b)) for a, b in zip(outputs, reference, strict=True))
        return f"top-1 {agree}/{len(outputs)}"
    worst = min(float(np.dot(a.ravel(), b.ravel()) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
                for a, b in zip(outputs, reference, strict=True))
    return f"cosine >= {worst:.5f} on {len(outputs)}"


def measure(bundle_dir: Path, role: str, runs: int, threads: int) -> list[dict[str, Any]]:
    bundle = verify_bundle(bundle_dir)
    batches = _batches(bundle, role)
    rows: list[dict[str, Any]] = []
    reference: list[np.ndarray] | None = None
    for backend in BACKENDS:
        try:
            session, choice = open_engine(bundle, role, EngineProfile(intra_op_threads=threads, backend=backend))
        except EngineError as exc:
            rows.append({"backend": backend, "status": "n/a", "reason": str(exc)})
            continue
        name = session.get_inputs()[0].name
        outputs = [session.run(None, {name: b})[0] for b in batches]
        for i in range(WARMUP):
            session.run(None, {name: batches[i % len(batches)]})
        times = []
        for i in range(runs):
            start = time.perf_counter()
            session.run(None, {name: batches[i % len(batches)]})
            times.append((time.perf_counter() - start) * 1000.0)
        reference = outputs if reference is None else reference
        rows.append({"backend": choice.backend, "status": "ok", "ms": percentiles(times), "inputs": len(batches),
                     "vs_cpu": _agreement(outputs, reference, role)})
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| backend | median ms | p95 ms | output vs ORT CPU |", "|---|---|---|---|"]
    for row in rows:
        if row["status"] == "ok":
            lines.append(f"| {row['backend']} | {row['ms']['p50']} | {row['ms']['p95']} | {row['vs_cpu']} |")
        else:
            lines.append(f"| {row['backend']} | n/a | n/a | {row['reason']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="a bundle exported with the tensorrt target")
    parser.add_argument("--role", default="image-labeller", choices=ROLES)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for the ORT backends")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    rows = measure(args.bundle, args.role, args.runs, args.threads)
    print(markdown(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "runs": args.runs,
                                         "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

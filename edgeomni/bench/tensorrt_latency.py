"""Labeller latency per backend: ORT CPU vs ORT CUDA EP vs ORT TensorRT EP vs the bundle's TensorRT engine.

    python -m edgeomni.bench.tensorrt_latency --bundle DIR [--runs 200] [--json PATH]

Each backend is opened through the engine layer with that backend forced (`edgeomni.engines.backend`), so a
backend that cannot run here is reported with the engine layer's reason instead of a figure. Latency is per
`run` call at batch 1 on real photos (scikit-image, export extra), after warm-up, with `time.perf_counter()`;
top-1 of every backend is compared with ORT CPU. Used by scripts/gpu_tensorrt_check.sh on a GPU machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeomni.bundle import verify_bundle
from edgeomni.engines.backend import open_engine
from edgeomni.engines.image_preprocess import preprocess_rgb
from edgeomni.engines.session import EngineProfile
from edgeomni.errors import EngineError
from edgeomni.telemetry import percentiles

BACKENDS = ("cpu", "cuda", "tensorrt-ep", "tensorrt")
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera", "cat")
WARMUP = 10


def _batches(bundle_dir: Path, role: str) -> list[np.ndarray]:
    from skimage import color, data  # benchmark only (export extra): real photographs

    params = verify_bundle(bundle_dir).manifest.by_role(role).preprocess
    out = []
    for name in PHOTOS:
        photo = np.asarray(getattr(data, name)())
        photo = (color.gray2rgb(photo) if photo.ndim == 2 else photo[..., :3]).astype(np.uint8)
        out.append(preprocess_rgb(photo, int(params["size"]), tuple(params["mean"]), tuple(params["std"])))
    return out


def measure(bundle_dir: Path, role: str, runs: int, threads: int) -> list[dict[str, Any]]:
    bundle = verify_bundle(bundle_dir)
    batches = _batches(bundle_dir, role)
    rows: list[dict[str, Any]] = []
    reference: list[int] | None = None
    for backend in BACKENDS:
        try:
            session, choice = open_engine(bundle, role, EngineProfile(intra_op_threads=threads, backend=backend))
        except EngineError as exc:
            rows.append({"backend": backend, "status": "n/a", "reason": str(exc)})
            continue
        name = session.get_inputs()[0].name
        tops = [int(np.argmax(session.run(None, {name: b})[0][0])) for b in batches]
        for i in range(WARMUP):
            session.run(None, {name: batches[i % len(batches)]})
        times = []
        for i in range(runs):
            start = time.perf_counter()
            session.run(None, {name: batches[i % len(batches)]})
            times.append((time.perf_counter() - start) * 1000.0)
        reference = tops if reference is None else reference
        agree = sum(a == b for a, b in zip(tops, reference, strict=True))
        rows.append({"backend": choice.backend, "status": "ok", "ms": percentiles(times),
                     "top1_agreement_with_cpu": f"{agree}/{len(tops)}"})
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| backend | median ms | p95 ms | top-1 = ORT CPU |", "|---|---|---|---|"]
    for row in rows:
        if row["status"] == "ok":
            lines.append(f"| {row['backend']} | {row['ms']['p50']} | {row['ms']['p95']} | "
                         f"{row['top1_agreement_with_cpu']} |")
        else:
            lines.append(f"| {row['backend']} | n/a | n/a | {row['reason']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="a bundle exported with the tensorrt target")
    parser.add_argument("--role", default="image-labeller")
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

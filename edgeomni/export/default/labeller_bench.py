"""Benchmark the default bundle's image labeller: FP32 vs INT8 size, latency and agreement.

It lives with the export stage, not in edgeomni/bench/, because it runs the export's own quantizer and bundle
builder (the calibration variants); the benchmarks and the export stage do not import each other.

    python -m edgeomni.export.default.labeller_bench --build --variants --out bench-out/labeller.json

Prints a Markdown section (pasted into docs/BENCHMARKS.md) and writes the raw figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime

from edgeomni.bundle.verify import verify_bundle
from edgeomni.datasets.calibration_photos import build_calibration_sets
from edgeomni.engines.image_preprocess import preprocess_rgb
from edgeomni.export.default.build import build_default_bundle
from edgeomni.export.default.mobilenet_labeller import LABELLER_METHOD, LABELLER_PERCENTILE
from edgeomni.export.steps.quantize_int8 import compare_classifiers, quantize_int8
from edgeomni.paths import default_bundle_dir

VARIANTS = (  # (calibration method, percentile, activations)
    ("minmax", None, "int8-symmetric"),
    ("entropy", None, "int8-symmetric"),
    ("percentile", 99.999, "int8-symmetric"),
    ("percentile", 99.99, "int8-symmetric"),
    ("percentile", 99.99, "uint8-asymmetric"),
)


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo") as fh:  # Linux only, like the devices this targets
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), "numpy": np.__version__,
            "onnxruntime": onnxruntime.__version__, "platform": platform.platform()}


def preprocess_latency(runs: int) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(0)
    result = {}
    for name, shape in (("720p", (720, 1280, 3)), ("1080p", (1080, 1920, 3))):
        frame = rng.integers(0, 256, shape, dtype=np.uint8)
        preprocess_rgb(frame)
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            preprocess_rgb(frame)
            times.append((time.perf_counter() - started) * 1000)
        result[name] = {"median": round(float(np.median(times)), 3), "p95": round(float(np.percentile(times, 95)), 3)}
    return result


def variants(fp32: Path, calibration: np.ndarray, heldout: np.ndarray, runs: int) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeomni-bench-") as tmp:
        for method, percentile, activations in VARIANTS:
            path = Path(tmp) / f"{method}-{percentile}-{activations}.onnx"
            started = time.perf_counter()
            quantize_int8(fp32, path, calibration, method=method, percentile=percentile or 99.999,
                          activations=activations, progress=lambda _msg: None)
            seconds = time.perf_counter() - started
            report = compare_classifiers(fp32, path, heldout, runs=runs)
            rows.append({"method": method, "percentile": percentile, "activations": activations,
                         "quantize_s": round(seconds, 1), **{k: report[k] for k in (
                             "top1_agreement", "top5_overlap", "mean_abs_logit_diff", "latency_ms", "size_bytes")}})
            print(f"  variant {method} {percentile or ''} {activations}: top-1 {report['top1_agreement']:.3f}",
                  file=sys.stderr)
    return rows


def markdown(r: dict[str, Any]) -> str:
    m, lat = r["machine"], r["labeller"]["latency_ms"]
    size = r["labeller"]["size_bytes"]
    lines = [
        "## Default bundle and MobileNetV2 INT8 vs FP32",
        "",
        f"- Command: `{r['command']}`",
        f"- Machine: {m['nproc']} cores, {m['cpu']}; Python {m['python']}, onnxruntime {m['onnxruntime']}, "
        f"numpy {m['numpy']}",
        f"- Date: {r['date']}",
    ]
    if r.get("build_s") is not None:
        lines.append(f"- Bundle build (`build_default_bundle(force=True)`): {r['build_s']:.1f} s")
    lines += [
        f"- INT8 calibration: {r['labeller']['calibration']}",
        f"- Held-out set: {r['labeller']['heldout_images']} images from photos not used for calibration",
        "",
        "| model | file size | 1 thread median | 1 thread p95 | 2 threads median | 2 threads p95 |",
        "|---|---|---|---|---|---|",
    ]
    for kind in ("fp32", "int8"):
        t1, t2 = lat[kind]["threads_1"], lat[kind]["threads_2"]
        lines.append(f"| {kind.upper()} | {size[kind] / 1e6:.2f} MB | {t1['median']:.2f} ms | {t1['p95']:.2f} ms | "
                     f"{t2['median']:.2f} ms | {t2['p95']:.2f} ms |")
    lab = r["labeller"]
    lines += [
        "",
        f"Latency: batch 1, ORT CPUExecutionProvider, {lat['fp32']['threads_1']['runs']} runs per cell after 5 "
        "warm-up runs, cycling through the held-out images.",
        f"Size ratio FP32/INT8: {size['fp32'] / size['int8']:.2f}x. Top-1 agreement INT8 vs FP32: "
        f"{lab['top1_agreement']:.3f} ({round(lab['top1_agreement'] * lab['heldout_images'])}/"
        f"{lab['heldout_images']}); top-5 overlap {lab['top5_overlap']:.3f}; INT8 top-1 within FP32 top-5 "
        f"{lab['int8_top1_in_fp32_top5']:.3f}; mean abs logit difference {lab['mean_abs_logit_diff']:.3f}.",
        "",
        f"preprocess_rgb (numpy): 720p median {r['preprocess_ms']['720p']['median']:.2f} ms, "
        f"1080p median {r['preprocess_ms']['1080p']['median']:.2f} ms.",
    ]
    if r.get("variants"):
        lines += ["", "Calibration and activation variants (same calibration and held-out sets):", "",
                  "| method | activations | top-1 agreement | top-5 overlap | mean abs logit diff | "
                  "1 thread median | 2 threads median | quantize time |", "|---|---|---|---|---|---|---|---|"]
        for v in r["variants"]:
            name = v["method"] + (f" {v['percentile']}" if v["percentile"] else "")
            t = v["latency_ms"]["int8"]
            lines.append(f"| {name} | {v['activations']} | {v['top1_agreement']:.3f} | {v['top5_overlap']:.3f} | "
                         f"{v['mean_abs_logit_diff']:.3f} | {t['threads_1']['median']:.2f} ms | "
                         f"{t['threads_2']['median']:.2f} ms | {v['quantize_s']:.1f} s |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeomni.export.default.labeller_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=None, help="bundle directory (default: the default bundle)")
    parser.add_argument("--build", action="store_true", help="rebuild the bundle first and time the build")
    parser.add_argument("--runs", type=int, default=100, help="latency runs per model and thread count (>= 50)")
    parser.add_argument("--variants", action="store_true", help="also compare calibration/activation variants")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.runs < 50:
        parser.error("--runs must be at least 50 for a p95 worth reporting")

    bundle = args.bundle or default_bundle_dir()
    build_s = None
    if args.build:
        started = time.perf_counter()
        build_default_bundle(bundle, force=True, progress=lambda msg: print(msg, file=sys.stderr))
        build_s = time.perf_counter() - started
    verified = verify_bundle(bundle)
    fp32, int8 = verified.role_file("image-labeller-fp32"), verified.role_file("image-labeller")
    sets = build_calibration_sets()
    report = compare_classifiers(fp32, int8, sets.heldout, runs=args.runs)
    quant = verified.manifest.by_role("image-labeller").report.get("quantization", {})
    calibration = (f"{quant.get('calibration_method', LABELLER_METHOD)}"
                   f"{' ' + str(quant.get('percentile', LABELLER_PERCENTILE)) if 'percentile' in quant else ''}, "
                   f"{quant.get('calibration_images', len(sets.calibration))} images, "
                   f"{quant.get('activations', '?')} activations, per-channel int8 symmetric weights, QDQ")
    args_given = argv if argv is not None else sys.argv[1:]
    result: dict[str, Any] = {
        "command": "python -m edgeomni.export.default.labeller_bench " + " ".join(args_given),
        "date": datetime.now(UTC).date().isoformat(),
        "machine": machine(),
        "bundle": str(bundle),
        "build_s": None if build_s is None else round(build_s, 1),
        "labeller": {**report, "calibration": calibration},
        "preprocess_ms": preprocess_latency(args.runs),
    }
    if args.variants:
        result["variants"] = variants(fp32, sets.calibration, sets.heldout, args.runs)
    text = markdown(result)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

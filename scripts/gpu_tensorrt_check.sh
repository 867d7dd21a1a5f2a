#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: build the MobileNetV2, PP-OCR and Whisper-encoder TensorRT engines
# with the export stage, caption the sample with the Whisper bundle, run the GPU tests, and print each model's
# latency (median/p95) for ORT CPU vs ORT CUDA EP vs ORT TensorRT EP vs the serialized TensorRT engine, each
# opened through the runtime's engine layer.
#
#   scripts/gpu_tensorrt_check.sh [OUT_DIR]          (default: bench-out/tensorrt)
#   ORT_GPU=1 scripts/gpu_tensorrt_check.sh          also swap onnxruntime for onnxruntime-gpu (CUDA/TensorRT EPs)
#
# Needs `make setup` first (.venv with the export extra). Nothing here runs without a GPU: it stops with the
# reason. Results: OUT_DIR/{export,ocr,whisper} (bundle + report.md), OUT_DIR/latency-ROLE.json, OUT_DIR/latency.md.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench-out/tensorrt}
PY=.venv/bin/python
PIP=.venv/bin/pip
[ -x "$PY" ] || { echo "no .venv: run 'make setup' first" >&2; exit 2; }
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader \
  || { echo "no NVIDIA GPU (nvidia-smi missing): nothing to check here" >&2; exit 2; }

echo "==> TensorRT + cuda-python (the 'tensorrt' extra, pinned in pyproject.toml)"
"$PY" -c "import tensorrt, cuda.bindings" 2>/dev/null \
  || "$PIP" install -q "tensorrt-cu12==10.16.1.11" "cuda-python==12.9.4" "cuda-bindings==12.9.10"
if [ "${ORT_GPU:-0}" = 1 ]; then
  echo "==> onnxruntime-gpu (same version as the CPU build) for the CUDA / TensorRT execution providers"
  ver=$("$PY" -c "import onnxruntime; print(onnxruntime.__version__)")
  # (onnxruntime-gpu can trail the CPU build: 1.32.0 CPU, 1.31.1 GPU on PyPI in 2026-11; then the newest before it)
  "$PIP" uninstall -q -y onnxruntime && { "$PIP" install -q "onnxruntime-gpu==$ver" || "$PIP" install -q "onnxruntime-gpu<=$ver"; }
fi
"$PY" - <<'PY'
from edgeomni.engines.tensorrt_runner import gpu_identity, tensorrt_version
gpu = gpu_identity()
print(f"TensorRT {tensorrt_version()} on {gpu.name} (sm {gpu.compute_capability})")
PY

echo "==> export export/mobilenet_v2.yaml (targets include tensorrt) -> $OUT/export"
rm -rf "$OUT/export"
.venv/bin/edgeomni export export/mobilenet_v2.yaml --out "$OUT/export"
grep -i tensorrt "$OUT/export/report.md" || true

echo "==> export export/ppocr_v4.yaml with the tensorrt target -> $OUT/ocr (an engine per component)"
rm -rf "$OUT/ocr"
.venv/bin/edgeomni export export/ppocr_v4.yaml --out "$OUT/ocr" --set 'targets=[onnxruntime-cpu, tensorrt]'
grep -i tensorrt "$OUT/ocr/report.md" || true

echo "==> export export/whisper_tiny_en.yaml with the tensorrt target -> $OUT/whisper (the encoder's engine)"
rm -rf "$OUT/whisper"
.venv/bin/edgeomni export export/whisper_tiny_en.yaml --out "$OUT/whisper" --set 'targets=[onnxruntime-cpu, tensorrt]'
grep -i tensorrt "$OUT/whisper/report.md" || true
echo "==> the sample clip captioned with the Whisper bundle: which backend each role ran on"
.venv/bin/edgeomni run --source sample --no-realtime --bundle "$OUT/whisper/bundle" --sink "jsonl:$OUT/whisper_run.jsonl" \
  >/dev/null
head -1 "$OUT/whisper_run.jsonl" | "$PY" -c "import json, sys; print(json.dumps(json.load(sys.stdin)['backend'], indent=1))"

echo "==> the TensorRT EP on each bundle's TensorRT-form copy (its engine cache: a second open loads, not builds)"
for pair in export:image-labeller ocr:ocr-detector whisper:asr-whisper-encoder; do
  bundle=${pair%%:*} role=${pair#*:}
  "$PY" - "$OUT/$bundle/bundle" "$role" <<'PY'
import sys, time
from edgeomni.bundle import verify_bundle
from edgeomni.engines.backend import open_engine
from edgeomni.engines.session import EngineProfile
bundle, role = verify_bundle(sys.argv[1]), sys.argv[2]
for attempt in ("first open (builds)", "second open (cache)"):
    started = time.perf_counter()
    session, choice = open_engine(bundle, role, EngineProfile(backend="tensorrt-ep"))
    print(f"{role}: {attempt} {time.perf_counter() - started:.1f} s on {session.get_providers()}")
PY
done

echo "==> GPU tests (engine built from the INT8 ONNX, top-1 vs ORT CPU, profile refusal, labeller on the engine)"
.venv/bin/pytest -q tests/test_tensorrt_runtime.py -rs

echo "==> latency per backend: labeller, OCR detector and recognizer, Whisper encoder"
: > "$OUT/latency.md"
for pair in export:image-labeller ocr:ocr-detector ocr:ocr-recognizer whisper:asr-whisper-encoder; do
  bundle=${pair%%:*} role=${pair#*:}
  echo "### $role ($OUT/$bundle/bundle)" | tee -a "$OUT/latency.md"
  "$PY" -m edgeomni.bench.tensorrt_latency --bundle "$OUT/$bundle/bundle" --role "$role" --runs 500 \
    --json "$OUT/latency-$role.json" | tee -a "$OUT/latency.md"
done

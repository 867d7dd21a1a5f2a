#!/usr/bin/env bash
# Install the EdgeOmni runtime on a Jetson (JetPack 6, Python 3.10+). The runtime needs only numpy,
# onnxruntime (the JetPack onnxruntime-gpu wheel, for TensorRT/CUDA providers) and av.
# Bundles are built elsewhere (edgeomni bundle build-default / edgeomni export) and copied over.
set -euo pipefail
PREFIX=${PREFIX:-/opt/edgeomni}
python3 -m venv --system-site-packages "$PREFIX/venv"  # system site: JetPack's onnxruntime-gpu
"$PREFIX/venv/bin/pip" install "numpy<3" "av>=12"
python3 -c "import onnxruntime" 2>/dev/null || "$PREFIX/venv/bin/pip" install onnxruntime
"$PREFIX/venv/bin/pip" install --no-deps "$(dirname "$0")/../.."
# TensorRT's Python package comes with JetPack (system site); cuda-python gives the engine layer its device
# buffers. Without it, bundles' TensorRT engines are skipped and the TensorRT EP/CUDA/CPU are used.
python3 -c "import cuda.bindings" 2>/dev/null || "$PREFIX/venv/bin/pip" install "cuda-python==12.9.4"
install -m 0644 "$(dirname "$0")/edgeomni.service" /etc/systemd/system/edgeomni.service
echo "installed; copy a bundle to $PREFIX/bundle, then: systemctl enable --now edgeomni"

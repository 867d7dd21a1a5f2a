#!/usr/bin/env bash
# Install the EdgeOmni runtime on a Jetson (JetPack 6, Python 3.11). The runtime needs numpy, onnxruntime (a
# JetPack onnxruntime-gpu wheel, for the TensorRT/CUDA providers), av and prometheus-client.
# Bundles are built elsewhere (edgeomni bundle build-default / edgeomni export) and copied over.
set -euo pipefail
PREFIX=${PREFIX:-/opt/edgeomni}
PYTHON=${PYTHON:-python3.11}
SRC="$(cd "$(dirname "$0")/../.." && pwd)"
"$PYTHON" -m venv --system-site-packages "$PREFIX/venv"  # system site: JetPack's onnxruntime-gpu, if built for it
"$PREFIX/venv/bin/pip" install "numpy<3" "av>=12" "prometheus-client==0.26.0" "cryptography==50.0.2"
"$PREFIX/venv/bin/python" -c "import onnxruntime" 2>/dev/null || "$PREFIX/venv/bin/pip" install onnxruntime
"$PREFIX/venv/bin/pip" install --no-deps "$SRC"
# TensorRT's Python package comes with JetPack (system site); cuda-python gives the engine layer its device
# buffers. Without it, bundles' TensorRT engines are skipped and the TensorRT EP/CUDA/CPU are used.
"$PREFIX/venv/bin/python" -c "import cuda.bindings" 2>/dev/null || "$PREFIX/venv/bin/pip" install "cuda-python==12.9.4"
install -d -m 0755 "$PREFIX"
install -m 0644 "$(dirname "$0")/profile.toml" "$PREFIX/profile.toml"
install -m 0644 "$(dirname "$0")/edgeomni.service" /etc/systemd/system/edgeomni.service
systemctl daemon-reload
echo "installed; copy a bundle to $PREFIX/bundle, then: systemctl enable --now edgeomni"
echo "status: systemctl status edgeomni (STATUS says why it is not ready); metrics: curl localhost:9108/metrics"

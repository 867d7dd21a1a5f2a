"""The runtime path must run on a Jetson with numpy + onnxruntime + av only."""

import subprocess
import sys

RUNTIME_MODULES = ["edgeomni.cli", "edgeomni.pipeline", "edgeomni.sources", "edgeomni.engines.asr",
                   "edgeomni.engines.vad", "edgeomni.engines.labeller", "edgeomni.captions.speech",
                   "edgeomni.captions.visual", "edgeomni.sinks", "edgeomni.bundle", "edgeomni.config"]
RUNTIME_MODULES += ["edgeomni.ota.updater", "edgeomni.ota.install", "edgeomni.runtime", "edgeomni.ota.signing"]
RUNTIME_MODULES += ["edgeomni.outbox", "edgeomni.outbox.sink", "edgeomni.sync.device", "edgeomni.sync.worker"]
RUNTIME_MODULES += ["edgeomni.webrtc.server", "edgeomni.webrtc.session", "edgeomni.webrtc.client"]  # edgeomni serve
RUNTIME_MODULES += ["edgeomni.engines.faces", "edgeomni.engines.ocr", "edgeomni.vision.analyzer",
                    "edgeomni.vision.change", "edgeomni.chunking.video", "edgeomni.sinks.video",
                    "edgeomni.sinks.overlay"]  # the video path
RUNTIME_MODULES += ["edgeomni.engines.whisper_asr", "edgeomni.engines.whisper_features",
                    "edgeomni.engines.whisper_tokenizer"]  # Whisper bundles in `edgeomni run`
RUNTIME_MODULES += ["edgeomni.engines.backend", "edgeomni.engines.tensorrt_runner"]  # TensorRT engines
FORBIDDEN = ["torch", "transformers", "optimum", "onnx", "skimage", "PIL", "tokenizers", "yaml"]
FORBIDDEN += ["tensorrt", "cuda.bindings"]  # only when a TensorRT engine is tried (cuda-python's .pth imports `cuda`)


def test_runtime_path_imports_no_export_dependencies() -> None:
    code = (
        "import sys\n"
        f"for m in {RUNTIME_MODULES!r}: __import__(m)\n"
        f"bad = [m for m in {FORBIDDEN!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"runtime path imported: {out.stdout.strip()}"

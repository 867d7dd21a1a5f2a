"""The runtime path must run on a Jetson with numpy + onnxruntime + av only."""

import subprocess
import sys

RUNTIME_MODULES = ["edgeomni.cli", "edgeomni.pipeline", "edgeomni.sources", "edgeomni.engines.asr",
                   "edgeomni.engines.vad", "edgeomni.engines.labeller", "edgeomni.captions.speech",
                   "edgeomni.captions.visual", "edgeomni.sinks", "edgeomni.bundle", "edgeomni.config"]
FORBIDDEN = ["torch", "transformers", "optimum", "onnx", "skimage", "PIL", "tokenizers", "yaml"]


def test_runtime_path_imports_no_export_dependencies() -> None:
    code = (
        "import sys\n"
        f"for m in {RUNTIME_MODULES!r}: __import__(m)\n"
        f"bad = [m for m in {FORBIDDEN!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"runtime path imported: {out.stdout.strip()}"

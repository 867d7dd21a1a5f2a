"""torch module -> ONNX file, with the settings every EdgeOmni export uses."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
import torch

from edgeomni.errors import ExportError

OPSET = 17


def export_onnx(
    model: torch.nn.Module,
    example: torch.Tensor,
    path: Path,
    *,
    input_names: Sequence[str] = ("input",),
    output_names: Sequence[str] = ("logits",),
    opset: int = OPSET,
    progress: Callable[[str], None] = print,
) -> Path:
    """Export ``model`` with a dynamic batch axis, check the graph, and confirm ORT reproduces torch's output.

    The TorchScript exporter (dynamo=False) is used because the dynamo one needs onnxscript, which
    the export environment does not carry, and because it keeps symbolic output shapes.
    """
    import onnxruntime as ort

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    dynamic = {name: {0: "batch"} for name in (*input_names, *output_names)}
    started = time.perf_counter()
    progress(f"    torch.onnx.export opset {opset} -> {path.name}")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The legacy exporter is chosen deliberately (see above); its deprecation notice is noise here.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset,
                              input_names=list(input_names), output_names=list(output_names),
                              dynamic_axes=dynamic, do_constant_folding=True)
    except Exception as exc:  # the exporter raises many unrelated types; report them all the same way
        raise ExportError(f"ONNX export of {type(model).__name__} failed: {exc}") from exc
    onnx.checker.check_model(str(path))

    # A wrong export (e.g. BatchNorm left in training mode) still passes the checker, so compare outputs.
    with torch.no_grad():
        expected = model(example).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {input_names[0]: example.numpy()})[0]
    err = float(np.max(np.abs(got - expected)))
    if not np.allclose(got, expected, rtol=1e-3, atol=1e-3):
        raise ExportError(f"ONNX export of {type(model).__name__}: ORT output differs from torch (max abs {err:.3g})")
    size_mb = path.stat().st_size / 1e6
    elapsed = time.perf_counter() - started
    progress(f"    exported {size_mb:.1f} MB in {elapsed:.1f} s; ORT vs torch max abs diff {err:.2g}")
    return path

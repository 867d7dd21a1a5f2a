"""The `export` step: a recipe's source model as one FP32 ONNX file (an ONNX file, a PyTorch factory + weights,
or a local Hugging Face checkpoint through optimum's ONNX exporter), and torch module -> ONNX file with the
settings every EdgeOmni export uses. Nothing is ever downloaded."""

from __future__ import annotations

import importlib
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from edgeomni.errors import ExportError
from edgeomni.export.model_source import resolve_path
from edgeomni.export.recipe import Recipe

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


def export_fp32(recipe: Recipe, out: Path, progress: Callable[[str], None]) -> Path:
    """The recipe's source model as one FP32 ONNX file at `out`, checked to take `source.input_shape`."""
    source = recipe.source
    path = resolve_path(recipe, source.path, "source.path")
    out.parent.mkdir(parents=True, exist_ok=True)
    if source.kind == "onnx":
        if path.suffix != ".onnx" or not path.is_file():
            raise ExportError(f"source.path: expected an .onnx file, got {path}")
        shutil.copyfile(path, out)
    elif source.kind == "pytorch":
        _export_pytorch(recipe, path, out, progress)
    else:
        _export_huggingface(path, out, OPTIMUM_TASKS.get(recipe.task, "feature-extraction"), progress)
    _check_input(recipe, out)
    return out


def _export_pytorch(recipe: Recipe, weights: Path, out: Path, progress: Callable[[str], None]) -> None:
    module_name, _, function = recipe.source.factory.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as exc:
        raise ExportError(f"source.factory {recipe.source.factory!r}: cannot import it ({exc})") from None
    try:
        model = factory(weights)
    except Exception as exc:  # a factory can fail in many ways; say which recipe field led there
        raise ExportError(f"source.factory {recipe.source.factory!r} failed on {weights}: {exc}") from exc
    if not isinstance(model, torch.nn.Module):
        raise ExportError(f"source.factory {recipe.source.factory!r}: expected an nn.Module, got {type(model)}")
    torch.manual_seed(0)
    export_onnx(model, torch.randn(*recipe.source.input_shape), out, input_names=(recipe.source.input_name,),
                progress=progress)


# recipe task -> optimum's export task (it cannot infer one from a local directory)
OPTIMUM_TASKS = {"image-classification": "image-classification", "encoder": "feature-extraction"}


def _export_huggingface(checkpoint: Path, out: Path, task: str, progress: Callable[[str], None]) -> None:
    if not (checkpoint / "config.json").is_file():
        raise ExportError(f"source.path: {checkpoint} is not a Hugging Face checkpoint directory (no config.json)")
    try:
        from optimum.exporters.onnx import main_export
    except ImportError:
        raise ExportError("source.kind huggingface needs optimum's ONNX exporter: pip install optimum-onnx "
                          "(with torch==2.13.0 in the same command)") from None
    work = out.parent / "hf-export"
    progress(f"    optimum ONNX export of {checkpoint} (task {task}, local files only)")
    try:
        main_export(str(checkpoint), output=str(work), task=task, local_files_only=True, no_post_process=True)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:  # optimum's ways of saying the checkpoint won't do
        raise ExportError(f"source.path: optimum could not export {checkpoint} as {task}: {exc}") from None
    exported = sorted(work.glob("*.onnx"))
    if len(exported) != 1:
        raise ExportError(f"optimum exported {[p.name for p in exported]}: recipes take single-graph models for now")
    shutil.move(str(exported[0]), out)


def _check_input(recipe: Recipe, model: Path) -> None:
    """The calibration data will be shaped like `source.input_shape`: the model must take exactly that."""
    graph = onnx.load(str(model), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    names = [i.name for i in inputs]
    if names != [recipe.source.input_name]:
        raise ExportError(f"source model {model.name}: inputs {names} do not match the calibration data "
                          f"(source.input_name: {recipe.source.input_name!r}); recipes take one-input models")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    want = recipe.source.input_shape
    fits = len(dims) == len(want) and all(d is None or d == w for d, w in zip(dims[1:], want[1:], strict=True))
    if not fits:
        raise ExportError(f"source model {model.name}: input {names[0]!r} has shape {dims}, the calibration data "
                          f"is shaped {want} (source.input_shape)")

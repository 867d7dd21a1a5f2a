"""`edgeomni export RECIPE --check`: the recipe as it would run (after `--set`), and every local file or folder
it names resolved, without running a step. A typo in a path fails here in a second, not after calibration."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from edgeomni.errors import ExportError
from edgeomni.export.model_source import resolve_path
from edgeomni.export.recipe import Recipe

# Media names that are not paths: generated or package-shipped sets (edgeomni.datasets.media_sets, audio_sets).
BUILTIN_MEDIA = ("skimage:", "slides:", "photos:", "builtin", "speechset")


def local_inputs(recipe: Recipe) -> list[tuple[str, Path]]:
    """(field, resolved path) of every weights file, checkpoint, label file and media folder the recipe names;
    ExportError naming the field for the first one that is missing."""

    named = [("source.path", recipe.source.path)] if recipe.source.path else []
    named += [(f"source.components.{name}", path) for name, path in sorted(recipe.source.components.items())]
    if recipe.labels:
        named.append(("labels", recipe.labels))
    found = [(field, resolve_path(recipe, text, field).resolve()) for field, text in named]
    media = [(f"{split}.{kind}", kind, getattr(getattr(recipe, split), kind))
             for split in ("calibration", "heldout") for kind in ("images", "audio")]
    if "distill" in recipe.steps:
        media.append(("distill.audio", "audio", str(recipe.distill_spec().audio or "")))
    for field, kind, text in media:
        if not text or text.startswith(BUILTIN_MEDIA):
            continue
        folder = recipe.resolve(text.removeprefix("trainer:").removeprefix("speechset:")).resolve()
        if not folder.is_dir():
            raise ExportError(f"{field}: {folder} is not a directory (expected a folder of "
                              f"{kind}{' or a trainer set' if text.startswith('trainer:') else ''})")
        found.append((field, folder))
    return found


def describe(recipe: Recipe, path: Path) -> str:
    """The validated recipe as YAML (every field, defaults included) and its local inputs."""
    import yaml

    raw = recipe.to_dict()
    if "distill" in recipe.steps:  # its settings with their defaults, as the distillation will read them
        raw["distill"] = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(recipe.distill_spec()).items()}
    lines = [f"# {path}: valid; this is what `edgeomni export` would run (every field, defaults included)",
             yaml.safe_dump(raw, sort_keys=False).rstrip(), "# local inputs:"]
    for field, resolved in local_inputs(recipe):
        size = f"{resolved.stat().st_size / 1e6:.1f} MB" if resolved.is_file() else "folder"
        lines.append(f"#   {field}: {resolved} ({size})")
    return "\n".join(lines)

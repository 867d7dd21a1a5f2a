"""Speech recognition recipes (Whisper from a CTranslate2 checkpoint): [distill ->] ONNX -> encoder static INT8 +
decoder dynamic INT8 -> WER gate -> bundle that `edgeomni run --bundle` captions with.

The steps themselves live in edgeomni.export.whisper (also runnable alone as `python -m edgeomni.export.whisper`);
this module maps the recipe onto them and their report into the recipe's report.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeomni.errors import ExportError
from edgeomni.export.recipe import Recipe
from edgeomni.export.runner import Report


class _RecipeSteps:
    """The Whisper build's `step(key, title)` on top of the recipe report's numbered, timed steps."""

    def __init__(self, report: Report) -> None:
        self.report, self.wall_s = report, {}

    @contextlib.contextmanager
    def step(self, key: str, title: str) -> Iterator[None]:
        with self.report.step(title):
            yield
        self.wall_s[key] = self.report.data["steps"][-1]["seconds"]


def options_for(recipe: Recipe, bundle: Path) -> Any:
    from edgeomni.export.model_source import resolve_path
    from edgeomni.export.whisper.build import WhisperExportOptions

    if recipe.source.kind != "ctranslate2":
        raise ExportError(f"recipe {recipe.name}: source.kind: expected 'ctranslate2' for task speech-recognition "
                          f"(a Whisper model.bin or its directory), got {recipe.source.kind!r}")
    if recipe.quantize.mode != "static":
        raise ExportError("quantize.mode: expected 'static' for speech-recognition (the encoder is static INT8; "
                          f"the decoder is always dynamic INT8), got {recipe.quantize.mode!r}")
    model = resolve_path(recipe, recipe.source.path, "source.path")
    model_bin = model / "model.bin" if model.is_dir() else model
    if not model_bin.is_file():
        raise ExportError(f"source.path: {model_bin} does not exist (a CTranslate2 Whisper model.bin is expected; "
                          "nothing is downloaded)")
    return WhisperExportOptions(
        out=bundle, name=recipe.name, version=recipe.version, model_bin=model_bin,
        calibration_audio=_media(recipe, recipe.calibration.audio), calibration_clips=recipe.calibration.count,
        seed=recipe.calibration.seed, heldout_audio=_media(recipe, recipe.heldout.audio),
        gate_clips=recipe.heldout.count, method=recipe.quantize.method, activations=recipe.quantize.activations,
        max_wer_delta=recipe.gate.max_delta, min_size_ratio=recipe.gate.min_size_ratio,
        exclude_sensitive=recipe.gate.exclude_sensitive, max_excluded=recipe.gate.max_excluded,
        latency_runs=recipe.latency_runs, peer=recipe.peer,
        distill=recipe.distill_spec() if "distill" in recipe.steps else None, tensorrt="tensorrt" in recipe.targets)


def _media(recipe: Recipe, source: str) -> str:
    """Folders and trainer sets resolve from the recipe's directory; builtin/speechset are names."""
    kind, sep, rest = source.partition(":")
    if source in ("builtin", "speechset"):
        return source
    if sep and kind in ("trainer", "speechset"):
        return f"{kind}:{recipe.resolve(rest)}"
    return str(recipe.resolve(source))


def run(recipe: Recipe, work: Path, bundle: Path, report: Report) -> None:
    from edgeomni.export.runner import GateFailed
    from edgeomni.export.whisper.build import build_whisper_bundle

    options = options_for(recipe, bundle)
    try:
        _, whisper = build_whisper_bundle(options, report.progress, steps=_RecipeSteps(report))
    except GateFailed as exc:
        _merge(report, getattr(exc, "report", {}))
        raise
    _merge(report, whisper)
    report.data["targets"] = {t: "built (the INT8 ONNX pair; ONNX Runtime picks CUDA where it is offered)"
                              for t in recipe.targets if t != "tensorrt"}
    if "tensorrt" in recipe.targets:
        engine = whisper["tensorrt"]
        from edgeomni.export.tensorrt_target import describe

        report.data["targets"]["tensorrt"] = f"encoder {describe(engine)}; {engine['decoder']}"


def _merge(report: Report, whisper: dict[str, Any]) -> None:
    from edgeomni.export.whisper.bundle import report_markdown

    if not whisper.get("gate"):
        return
    report.data["whisper"] = whisper
    report.data["calibration"] = whisper.get("calibration", {})
    report.data["markdown"] = report_markdown(whisper).splitlines()[1:]  # its title is the recipe report's

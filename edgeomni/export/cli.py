"""`edgeomni export RECIPE.yaml [--out DIR] [--set FIELD=VALUE ...]` (needs the export extra: torch, onnx)."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgeomni.export.check import describe
from edgeomni.export.recipe import Recipe
from edgeomni.export.runner import GateFailed, run_recipe

EXIT_GATE_FAILED = 3


def add_export_parser(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser("export", help="turn a model into an INT8 edge bundle from a recipe (export extra)")
    export.add_argument("recipe", type=Path, help="recipe YAML (see export/*.yaml)")
    export.add_argument("--out", type=Path, default=None, help="output directory (default: export-out/NAME)")
    export.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a recipe field, e.g. --set quantize.method=entropy (repeatable)")
    export.add_argument("--check", action="store_true",
                        help="validate the recipe and its local files, print it as it would run, and stop")
    export.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    recipe = Recipe.load(args.recipe, args.overrides)
    if args.check:

        print(describe(recipe, args.recipe))
        return 0
    out = args.out or Path("export-out") / recipe.name
    try:
        bundle = run_recipe(recipe, out)
    except GateFailed as exc:
        print(f"edgeomni: export: {exc}")
        return EXIT_GATE_FAILED
    print(f"bundle ready at {bundle} (report: {out / 'report.md'})")
    return 0

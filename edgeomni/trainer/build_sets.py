"""`edgeomni trainer build-sets`: hard examples -> a calibration set and a distillation set.

Output (documented in docs/ARCHITECTURE.md, "Audio sets"):
  OUT/calibration/*.wav + OUT/calibration/manifest.json
  OUT/distillation/*.wav + OUT/distillation/manifest.json
Manifest: {"format": "edgeomni-audio-set/1", "purpose", "seed", "count", "total_seconds", "sample_rate",
"files": [{"file", "seconds", "text", "confidence", "device", "id"}]}. The split is a seeded shuffle, so
the same data and seed give the same sets. `text` is what the device heard (low confidence by
definition): the distillation step re-labels these clips with a teacher model.
"""

from __future__ import annotations

import io
import json
import random
import wave
from pathlib import Path
from typing import Any

from edgeomni.errors import EdgeOmniError
from edgeomni.trainer.dataset import read_datasets
from edgeomni.trainer.report import check_data_dirs

SET_FORMAT = "edgeomni-audio-set/1"


def build_sets(data_dirs: list[Path], out: Path, seed: int = 0, calibration_fraction: float = 0.3,
               max_calibration: int = 200) -> dict[str, Any]:
    if not 0.0 < calibration_fraction < 1.0:
        raise EdgeOmniError(f"--calibration-fraction: expected a fraction in (0, 1), got {calibration_fraction}")
    check_data_dirs(data_dirs)
    table = read_datasets(data_dirs)
    examples = [row for row in table.to_pylist() if row["kind"] == "hard_example" and row["audio_wav"]]
    if not examples:
        raise EdgeOmniError(f"{', '.join(map(str, data_dirs))}: no hard examples with audio in the dataset "
                            "(devices record them only with [outbox] hard_examples = true)")
    examples.sort(key=lambda row: row["id"])  # the dataset's file order is not stable; ids are
    random.Random(seed).shuffle(examples)
    n_cal = min(max_calibration, max(1, round(len(examples) * calibration_fraction)))
    if len(examples) == 1:
        n_cal = 1
    summary = {}
    for purpose, rows in (("calibration", examples[:n_cal]), ("distillation", examples[n_cal:] or examples[:n_cal])):
        summary[purpose] = _write_set(out / purpose, purpose, rows, seed)
    return summary


def _write_set(target: Path, purpose: str, rows: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    target.mkdir(parents=True, exist_ok=True)
    files, total = [], 0.0
    for index, row in enumerate(rows):
        name = f"{index:05d}-{row['id'][:8]}.wav"
        (target / name).write_bytes(row["audio_wav"])
        with wave.open(io.BytesIO(row["audio_wav"])) as clip:
            seconds = clip.getnframes() / clip.getframerate()
            rate = clip.getframerate()
        total += seconds
        files.append({"file": name, "seconds": round(seconds, 3), "text": row["text"] or "",
                      "confidence": row["confidence"], "device": row["device"], "id": row["id"]})
    manifest = {"format": SET_FORMAT, "purpose": purpose, "seed": seed, "count": len(files),
                "total_seconds": round(total, 3), "sample_rate": rate if files else 16000, "files": files}
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    return {"dir": str(target), "count": len(files), "total_seconds": manifest["total_seconds"]}

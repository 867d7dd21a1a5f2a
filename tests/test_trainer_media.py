"""Hard examples whose media a device got wrong: the trainer refuses them at ingest, and `build-sets` skips and
counts any such row already in a dataset (accepted by an older trainer) instead of crashing on it."""

from __future__ import annotations

import base64
import io
import json
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeomni.outbox.media import png_bytes, wav_bytes
from edgeomni.trainer.schema import SchemaError, validate_record

GOOD_WAV = wav_bytes(np.zeros(1600, np.float32))
GOOD_PNG = png_bytes(np.full((40, 60, 3), 90, np.uint8))


def _b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode()


def _wav_at(rate: int) -> bytes:
    """A WAV header claiming `rate` frames per second (Python's wave module refuses to write 0)."""
    blob = bytearray(GOOD_WAV)
    blob[24:28] = rate.to_bytes(4, "little")
    return bytes(blob)


def _speech(n: int, wav: bytes = GOOD_WAV, **extra: Any) -> dict[str, Any]:
    return {"id": f"speech-{n:04d}", "kind": "hard_example", "fleet": "f", "device": "dev-a", "ts": time.time(),
            "data": {"text": "fail better", "confidence": -0.9, "start": 0.0, "end": 0.1,
                     "audio_wav_b64": _b64(wav), **extra}}


def _vision(n: int, png: bytes = GOOD_PNG, **extra: Any) -> dict[str, Any]:
    return {"id": f"vision-{n:04d}", "kind": "hard_example", "fleet": "f", "device": "dev-a", "ts": time.time(),
            "data": {"modality": "vision", "text": "on screen: kite", "confidence": 0.3, "start": 0.0, "end": 1.5,
                     "labels": [{"label": "kite", "score": 0.3}], "image_png_b64": _b64(png), "source": "cam",
                     "stream": "main", "scene": n, **extra}}


BAD = {
    "a WAV declaring 0 frames per second": (_speech(900, _wav_at(0)), "audio"),
    "a WAV that is only a header": (_speech(901, GOOD_WAV[:12]), "audio"),
    "an 8-byte PNG": (_vision(902, GOOD_PNG[:8]), "image"),
    "a PNG of 0 x 0 pixels": (_vision(903, GOOD_PNG[:16] + bytes(8) + GOOD_PNG[24:]), "image"),
    "a scene that is a list": (_vision(904, scene=[1]), "scene"),
    "a thumbnail that is not a PNG": (_speech(905, thumbnail_png_b64=_b64(b"GIF89a" + bytes(20))), "thumbnail"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_ingest_refuses_a_hard_example_with_unusable_media(case: str) -> None:
    record, needle = BAD[case]
    with pytest.raises(SchemaError, match=needle):
        validate_record(record, "f", "dev-a", "hard_example")


def test_good_hard_examples_pass() -> None:
    for record in (_speech(1), _vision(2), _speech(3, thumbnail_png_b64=_b64(GOOD_PNG)), _vision(4, scene=None)):
        assert validate_record(record, "f", "dev-a", "hard_example") is record


def test_build_sets_skips_and_counts_rows_it_cannot_use(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow", reason="pyarrow (the trainer extra) is not installed")
    from edgeomni.trainer.build_sets import build_sets
    from edgeomni.trainer.dataset import Dataset

    dataset = Dataset(tmp_path / "data")  # stored as an older trainer did: without the media checks
    dataset.append("dev-a", [_speech(n) for n in range(4)] + [_vision(10 + n) for n in range(6)]
                   + [record for record, _ in BAD.values()])
    dataset.close()
    summary = build_sets([tmp_path / "data"], tmp_path / "sets", seed=1)
    assert summary["skipped"] == {"audio": 2, "image": 2, "scene": 1}
    sets = tmp_path / "sets"
    audio = [(sets / purpose, item) for purpose in ("calibration", "distillation")
             for item in json.loads((sets / purpose / "manifest.json").read_text())["files"]]
    assert sorted(item["id"] for _, item in audio) == [f"speech-{n:04d}" for n in range(4)] + ["speech-0905"]
    images = [item for purpose in ("calibration", "heldout", "distillation")
              for item in json.loads((sets / "images" / purpose / "manifest.json").read_text())["files"]]
    assert sorted(item["id"] for item in images) == [f"vision-{10 + n:04d}" for n in range(6)]
    for folder, item in audio:
        with wave.open(io.BytesIO((folder / item["file"]).read_bytes())) as clip:
            assert clip.getframerate() == 16000

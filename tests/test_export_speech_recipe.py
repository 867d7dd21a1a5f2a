"""Speech recipes (`task: speech-recognition`): validation, audio calibration/held-out sets (folders, trainer sets),
and the distill step's settings. The Whisper export itself runs through this recipe in test_export_whisper.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from media_factory import make_speech_wav

from edgeomni.datasets.audio_sets import calibration_audio, heldout_items
from edgeomni.errors import ExportError
from edgeomni.export.recipe import Recipe

ROOT = Path(__file__).resolve().parents[1]
WHISPER = ROOT / "export" / "whisper_tiny_en.yaml"


def load(tmp_path: Path, changes: dict, drop: tuple[str, ...] = ()) -> Recipe:
    raw = yaml.safe_load(WHISPER.read_text())
    for key in drop:
        raw.pop(key)
    raw.update(changes)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    return Recipe.load(path)


def test_shipped_speech_recipes_are_valid() -> None:
    recipe = Recipe.load(WHISPER)
    assert recipe.task == "speech-recognition" and recipe.gate.metric == "wer_delta"
    assert recipe.calibration.audio == "builtin" and recipe.heldout.audio == "speechset"
    for path in sorted((ROOT / "export").glob("whisper*.yaml")):
        Recipe.load(path)


@pytest.mark.parametrize(("changes", "message"), [
    ({"calibration": {"images": "skimage:calibration", "count": 4}}, r"calibration\.audio: expected audio for task"),
    ({"calibration": {"images": "x", "audio": "builtin"}}, r"calibration\.images or calibration\.audio: expected "
                                                           r"exactly one of them"),
    ({"gate": {"metric": "top1_agreement"}}, r"gate\.metric: expected a metric for task 'speech-recognition'"),
    ({"steps": ["export", "distill"]}, r"steps: expected each at most once, in the order"),
    ({"steps": ["distill", "export", "quantize", "gate"], "distill": {"decoder_layer": 2}},
     r"distill: unknown field\(s\) \['decoder_layer'\]"),
    ({"steps": ["distill", "export", "quantize", "gate"], "distill": {"decoder_layers": 7}},
     r"distill\.decoder_layers: expected 1\.\.3, got 7"),
    ({"distill": {"decoder_layers": 2}}, r"distill: expected no settings unless steps has distill"),
    ({"targets": ["tflite"]}, r"targets\[0\]: expected one of \['onnxruntime-cpu', 'onnxruntime-cuda', 'tensorrt'\], "
                              r"got 'tflite'"),
])
def test_bad_speech_recipes_name_the_field(tmp_path: Path, changes: dict, message: str) -> None:
    with pytest.raises(ExportError, match=message):
        load(tmp_path, changes)


def test_distill_only_for_speech(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "export" / "mobilenet_v2.yaml").read_text())
    raw["steps"] = ["distill", "export", "quantize", "gate"]
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ExportError, match=r"steps: expected distill only for task speech-recognition"):
        Recipe.load(tmp_path / "m.yaml")


def test_source_must_be_a_local_ctranslate2_model(tmp_path: Path) -> None:
    from edgeomni.export.tasks.speech import source_model

    recipe = load(tmp_path, {"source": {"kind": "ctranslate2", "path": str(tmp_path / "nowhere")}})
    with pytest.raises(ExportError, match=r"source\.path: .*nowhere does not exist .*nothing is downloaded"):
        source_model(recipe)
    recipe = load(tmp_path, {"source": {"kind": "onnx", "path": str(tmp_path)}})
    with pytest.raises(ExportError, match=r"source\.kind: expected 'ctranslate2' for task speech-recognition"):
        source_model(recipe)


def test_folder_calibration_is_stratified_and_seeded(tmp_path: Path) -> None:
    for voice in ("en", "en+f3"):
        (tmp_path / voice.replace("+", "_")).mkdir()
        for i, text in enumerate(("Open the window please.", "The train leaves at noon.", "Bring two cups.")):
            make_speech_wav(tmp_path / voice.replace("+", "_") / f"{i}.wav", text, voice=voice)
    clips, manifest = calibration_audio(str(tmp_path), 4, 7, Path, progress=lambda _: None)
    _, same = calibration_audio(str(tmp_path), 4, 7, Path, progress=lambda _: None)
    assert len(clips) == 4 and manifest["strata"] == {"en": 2, "en_f3": 2}
    assert [c["sha256"] for c in manifest["clips"]] == [c["sha256"] for c in same["clips"]]
    other = calibration_audio(str(tmp_path), 4, 8, Path, progress=lambda _: None)[1]
    assert {c["sha256"] for c in other["clips"]} != {c["sha256"] for c in manifest["clips"]}  # seed 8 differs


def test_trainer_sets_are_a_calibration_source(tmp_path: Path) -> None:
    """The format `edgeomni trainer build-sets` writes: OUT/calibration/*.wav + manifest.json."""
    sets = tmp_path / "sets" / "calibration"
    sets.mkdir(parents=True)
    files = []
    for i, device in enumerate(("dev-a", "dev-b", "dev-b")):
        make_speech_wav(sets / f"{i:05d}.wav", f"Hard example number {i + 1}.")
        files.append({"file": f"{i:05d}.wav", "seconds": 1.0, "text": "", "confidence": 0.2, "device": device,
                      "id": str(i)})
    manifest = {"format": "edgeomni-audio-set/1", "purpose": "calibration", "seed": 0, "count": 3,
                "total_seconds": 3.0, "sample_rate": 16000, "files": files}
    (sets / "manifest.json").write_text(json.dumps(manifest))
    clips, got = calibration_audio(f"trainer:{tmp_path / 'sets'}", 2, 0, Path, progress=lambda _: None)
    assert len(clips) == 2 and got["strata"] == {"dev-a": 1, "dev-b": 1}
    (sets / "00001.wav").unlink()
    with pytest.raises(ExportError, match=r"lists 00001\.wav, which is missing"):
        calibration_audio(f"trainer:{tmp_path / 'sets'}", 3, 0, Path, progress=lambda _: None)
    with pytest.raises(ExportError, match=r"no manifest\.json there or in calibration/"):
        calibration_audio(f"trainer:{tmp_path}", 3, 0, Path, progress=lambda _: None)


def test_heldout_folder_needs_reference_texts(tmp_path: Path) -> None:
    make_speech_wav(tmp_path / "a.wav", "The museum opens at nine.")
    (tmp_path / "a.txt").write_text("The museum opens at nine.")
    items, manifest = heldout_items(str(tmp_path), 10, Path, progress=lambda _: None)
    assert manifest["count"] == 1 and items[0]["reference"] == "The museum opens at nine."
    make_speech_wav(tmp_path / "b.wav", "No text for this one.")
    with pytest.raises(ExportError, match=r"b\.wav has no reference text b\.txt"):
        heldout_items(str(tmp_path), 10, Path, progress=lambda _: None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match=r"holds no audio files .* an empty calibration set cannot be used"):
        calibration_audio(str(tmp_path / "empty"), 3, 0, Path, progress=lambda _: None)

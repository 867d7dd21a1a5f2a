"""The default bundle: it verifies, every kind of damage is caught and named, and building it is idempotent."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from edgeomni.bundle import Manifest, verify_bundle
from edgeomni.errors import BundleError, ExportError
from edgeomni.export.default import build as db
from edgeomni.export.default.build import build_default_bundle
from edgeomni.pinned import PinnedFile, locate

EXPECTED_ROLES = {
    "vad": "vad",
    "asr_encoder": "asr-encoder",
    "asr_decoder": "asr-decoder",
    "asr_tokenizer": "asr-tokenizer",
    "labeller": "image-labeller",
    "labeller_fp32": "image-labeller-fp32",
    "labels": "image-labels",
    # the video path: face detector and PP-OCRv4 det/rec + dictionary
    "faces": "face-detector",
    "ocr_detector": "ocr-detector",
    "ocr_recognizer": "ocr-recognizer",
    "ocr_dictionary": "ocr-dictionary",
    "glyphs": "overlay-glyphs",
}


def _manifest(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / "manifest.json").read_text())


def _write_manifest(bundle: Path, raw: dict[str, Any]) -> None:
    (bundle / "manifest.json").write_text(json.dumps(raw))


def test_default_bundle_verifies_with_every_component(default_bundle: Path) -> None:
    verified = verify_bundle(default_bundle)
    manifest = verified.manifest
    assert manifest.name == "default"
    assert {name: c.role for name, c in manifest.components.items()} == EXPECTED_ROLES
    assert manifest.component("labeller").precision == "int8"
    assert manifest.component("labeller_fp32").precision == "fp32"
    assert manifest.component("asr_encoder").format == "ort"
    assert manifest.component("asr_tokenizer").format == "json"
    assert manifest.component("labels").format == "txt"
    vad = manifest.component("vad")
    assert [(s.input, s.output, s.shape) for s in vad.state] == [("state", "stateN", [2, 1, 128])]
    assert vad.preprocess == {"sample_rate": 16000, "frame_samples": 512, "context_samples": 64}
    assert {t.name for t in vad.inputs} == {"input", "state", "sr"}
    assert manifest.component("asr_decoder").preprocess["num_layers"] == 6
    for name, comp in manifest.components.items():
        assert comp.provenance["package"] and comp.provenance["version"], name
        # Apache-2.0: BlazeFace, PP-OCR; CC0-1.0: glyph atlas from Pillow's built-in font (Aileron)
        assert comp.license in ("MIT", "BSD-3-Clause", "Apache-2.0", "CC0-1.0"), name
    assert verified.role_file("image-labels").read_text().count("\n") == 1000


def test_manifest_records_a_disjoint_calibration_split(default_bundle: Path) -> None:
    calibration = Manifest.load(default_bundle).calibration
    cal, held = calibration["calibration"], calibration["heldout"]
    assert set(cal["photos"]).isdisjoint(held["photos"])
    assert {f["file"] for f in cal["files"]}.isdisjoint({f["file"] for f in held["files"]})
    assert cal["count"] == sum(f["images"] for f in cal["files"]) == 48
    stats = calibration["inputs"]["input"]
    assert stats["min"] < stats["percentiles"]["p50"] < stats["max"]
    assert len(stats["per_channel"]["mean"]) == 3
    assert isinstance(calibration["seed"], int)


@pytest.mark.parametrize("component", ["labeller", "asr_decoder", "vad", "labels"])
def test_one_changed_byte_is_caught_and_named(tmp_bundle_copy: Path, component: str) -> None:
    relpath = _manifest(tmp_bundle_copy)["components"][component]["file"]
    path = tmp_bundle_copy / relpath
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError) as err:
        verify_bundle(tmp_bundle_copy)
    message = str(err.value)
    assert f"component {component!r}" in message and "sha256" in message
    assert message.count("component '") == 1  # only the damaged one is reported


def test_removed_and_truncated_files_are_all_reported(tmp_bundle_copy: Path) -> None:
    raw = _manifest(tmp_bundle_copy)["components"]
    (tmp_bundle_copy / raw["asr_tokenizer"]["file"]).unlink()
    encoder = tmp_bundle_copy / raw["asr_encoder"]["file"]
    encoder.write_bytes(encoder.read_bytes()[:-10])
    with pytest.raises(BundleError) as err:
        verify_bundle(tmp_bundle_copy)
    message = str(err.value)
    assert "component 'asr_tokenizer'" in message and "missing" in message
    assert "component 'asr_encoder'" in message and "size expected" in message


def test_bad_json_manifest(tmp_bundle_copy: Path) -> None:
    (tmp_bundle_copy / "manifest.json").write_text('{"format": "edgeomni-bundle/1", ')
    with pytest.raises(BundleError, match="not valid JSON"):
        verify_bundle(tmp_bundle_copy)


def test_missing_field_is_named(tmp_bundle_copy: Path) -> None:
    raw = _manifest(tmp_bundle_copy)
    del raw["components"]["vad"]["sha256"]
    _write_manifest(tmp_bundle_copy, raw)
    with pytest.raises(BundleError, match=r"component 'vad': missing field\(s\) sha256"):
        verify_bundle(tmp_bundle_copy)


def test_missing_top_level_field_is_named(tmp_bundle_copy: Path) -> None:
    raw = _manifest(tmp_bundle_copy)
    del raw["version"]
    _write_manifest(tmp_bundle_copy, raw)
    with pytest.raises(BundleError, match=r"missing field\(s\) version"):
        verify_bundle(tmp_bundle_copy)


def test_wrong_bundle_format_string(tmp_bundle_copy: Path) -> None:
    raw = _manifest(tmp_bundle_copy)
    raw["format"] = "edgeomni-bundle/0"
    _write_manifest(tmp_bundle_copy, raw)
    with pytest.raises(BundleError, match=r"\.format: expected 'edgeomni-bundle/1', got 'edgeomni-bundle/0'"):
        verify_bundle(tmp_bundle_copy)


def test_wrong_component_format_string(tmp_bundle_copy: Path) -> None:
    raw = _manifest(tmp_bundle_copy)
    raw["components"]["labeller"]["format"] = "onnx2"
    _write_manifest(tmp_bundle_copy, raw)
    with pytest.raises(BundleError, match=r"component 'labeller'\.format: expected one of .* got 'onnx2'"):
        verify_bundle(tmp_bundle_copy)


@pytest.mark.parametrize("bad", ["abc", "A" * 64, "g" * 64, 12345])
def test_bad_sha256_string_is_named(tmp_bundle_copy: Path, bad: object) -> None:
    raw = _manifest(tmp_bundle_copy)
    raw["components"]["asr_encoder"]["sha256"] = bad
    _write_manifest(tmp_bundle_copy, raw)
    with pytest.raises(BundleError, match=r"component 'asr_encoder'\.sha256: expected 64 lowercase hex digits"):
        verify_bundle(tmp_bundle_copy)


def test_missing_bundle_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"does not exist.*build-default"):
        verify_bundle(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match=r"manifest\.json: missing"):
        verify_bundle(tmp_path / "empty")


def test_second_build_reuses_the_bundle(default_bundle: Path) -> None:
    before = _manifest(default_bundle)
    messages: list[str] = []
    started = time.perf_counter()
    assert build_default_bundle(default_bundle, progress=messages.append) == default_bundle
    assert time.perf_counter() - started < 10  # hashing ~65 MB, no export
    assert any("reusing" in m for m in messages)
    assert _manifest(default_bundle) == before


def test_locate_names_package_pin_and_install_command() -> None:
    with pytest.raises(ExportError) as err:
        locate(PinnedFile("moonshine-voice", "0.1.5", "moonshine_voice/assets/tiny-en/encoder_model.ort", "MIT"))
    message = str(err.value)
    assert "moonshine-voice" in message and "0.1.0" in message and "0.1.5" in message
    assert "pip install --no-deps moonshine-voice==0.1.5" in message
    with pytest.raises(ExportError, match=r"edgeomni-no-such-weights==1\.0 is not installed.*pip install --no-deps"):
        locate(PinnedFile("edgeomni-no-such-weights", "1.0", "x.onnx", "MIT"))
    with pytest.raises(ExportError, match="is missing from it"):
        locate(PinnedFile("silero-vad", "6.2.3", "silero_vad/data/no_such.onnx", "MIT"))


def test_failed_build_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = PinnedFile("edgeomni-no-such-weights", "1.0", "x.onnx", "MIT")
    monkeypatch.setattr(db, "PINNED", (*db.PINNED, missing))
    out = tmp_path / "bundles" / "default"
    with pytest.raises(ExportError, match="edgeomni-no-such-weights"):
        build_default_bundle(out, progress=lambda _m: None)
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if not p.name.endswith(".lock")] == []


def test_refuses_to_replace_a_directory_that_is_not_a_bundle(tmp_path: Path) -> None:
    keep = tmp_path / "mine" / "notes.txt"
    keep.parent.mkdir()
    keep.write_text("not a bundle")
    with pytest.raises(ExportError, match="refusing to replace"):
        build_default_bundle(keep.parent, progress=lambda _m: None)
    assert keep.read_text() == "not a bundle"


def test_refuses_to_replace_another_bundle_without_force(tmp_bundle_copy: Path) -> None:
    raw = _manifest(tmp_bundle_copy)
    raw["name"] = "trained-2026-11"
    _write_manifest(tmp_bundle_copy, raw)
    with pytest.raises(ExportError, match=r"holds bundle 'trained-2026-11'.*--force"):
        build_default_bundle(tmp_bundle_copy, progress=lambda _m: None)
    assert _manifest(tmp_bundle_copy)["name"] == "trained-2026-11"


@pytest.mark.slow
def test_damaged_bundle_is_rebuilt_atomically(tmp_bundle_copy: Path) -> None:
    labeller = tmp_bundle_copy / _manifest(tmp_bundle_copy)["components"]["labeller"]["file"]
    labeller.write_bytes(b"broken")
    messages: list[str] = []
    assert build_default_bundle(tmp_bundle_copy, progress=messages.append) == tmp_bundle_copy
    assert any(m.startswith("[8/8]") for m in messages)
    verify_bundle(tmp_bundle_copy)
    leftovers = [p.name for p in tmp_bundle_copy.parent.iterdir() if p.name.startswith(".bundle.")]
    assert all(name.endswith(".lock") for name in leftovers)

"""`edgeomni bundle verify|show` as a user runs them: exit codes and messages that name the component."""

from pathlib import Path

import pytest

from edgeomni.bundle import Manifest
from edgeomni.cli import main


def test_verify_passes_on_the_default_bundle(default_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bundle", "verify", str(default_bundle)]) == 0
    assert "every sha256 matches" in capsys.readouterr().out


def test_verify_fails_naming_the_component_after_one_byte_changes(
        tmp_bundle_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = Manifest.load(tmp_bundle_copy)
    engine = tmp_bundle_copy / manifest.component("asr_decoder").file
    data = bytearray(engine.read_bytes())
    data[1000] ^= 0x01
    engine.write_bytes(bytes(data))
    assert main(["bundle", "verify", str(tmp_bundle_copy)]) == 2
    err = capsys.readouterr().err
    assert "'asr_decoder'" in err and "sha256" in err and "asr_encoder" not in err


def test_verify_fails_naming_the_component_after_a_file_is_removed(
        tmp_bundle_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = Manifest.load(tmp_bundle_copy)
    (tmp_bundle_copy / manifest.component("labeller").file).unlink()
    assert main(["bundle", "verify", str(tmp_bundle_copy)]) == 2
    err = capsys.readouterr().err
    assert "'labeller'" in err and "missing" in err


def test_show_prints_every_component(default_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bundle", "show", str(default_bundle)]) == 0
    out = capsys.readouterr().out
    manifest = Manifest.load(default_bundle)
    for name, component in manifest.components.items():
        assert f"  {name}  role={component.role}" in out
        assert component.provenance["package"] in out
    assert "top1_agreement" in out  # the export report travels with the bundle


def test_verify_of_a_missing_bundle_says_how_to_build_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bundle", "verify", str(tmp_path / "nothing")]) == 2
    assert "edgeomni bundle build-default" in capsys.readouterr().err

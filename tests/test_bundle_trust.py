"""`bundle verify` vouches only for what is inside the bundle, and for its signature when a key is given."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ota_factory import first_engine_file, make_keys

from edgeomni.bundle import verify_bundle
from edgeomni.errors import BundleError
from edgeomni.ota.signing import load_private_key, sign_manifest

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgeomni", "bundle", *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env={**os.environ})


def test_a_component_that_links_outside_the_bundle_is_refused(tmp_bundle_copy: Path, tmp_path: Path) -> None:
    """Same bytes, same sha256, but the file lives elsewhere: whoever can change it changes the bundle."""
    name = first_engine_file(tmp_bundle_copy)
    outside = tmp_path / "elsewhere.onnx"
    shutil.copyfile(tmp_bundle_copy / name, outside)
    (tmp_bundle_copy / name).unlink()
    (tmp_bundle_copy / name).symlink_to(outside)
    with pytest.raises(BundleError, match=rf"{name} .*outside the bundle"):
        verify_bundle(tmp_bundle_copy)
    proc = _cli("verify", str(tmp_bundle_copy))
    assert proc.returncode == 2 and "outside the bundle" in proc.stderr


def test_a_link_inside_the_bundle_is_fine(tmp_bundle_copy: Path) -> None:
    name = first_engine_file(tmp_bundle_copy)
    moved = tmp_bundle_copy / "store" / "vad.bin"
    moved.parent.mkdir()
    (tmp_bundle_copy / name).rename(moved)
    (tmp_bundle_copy / name).symlink_to(moved)
    verify_bundle(tmp_bundle_copy)


def test_verify_checks_the_signature_when_given_a_public_key(tmp_bundle_copy: Path, tmp_path: Path) -> None:
    key, public = make_keys(tmp_path / "keys")
    stranger, _ = make_keys(tmp_path / "stranger")
    unsigned = _cli("verify", str(tmp_bundle_copy), "--public-key", public)
    assert unsigned.returncode == 2 and "not signed" in unsigned.stderr, unsigned.stderr
    sign_manifest(tmp_bundle_copy, load_private_key(stranger))
    forged = _cli("verify", str(tmp_bundle_copy), "--public-key", public)
    assert forged.returncode == 2 and "does not match its manifest" in forged.stderr, forged.stderr
    sign_manifest(tmp_bundle_copy, load_private_key(key))
    config = tmp_path / "device.toml"
    config.write_text(f'[ota]\npublic_key = "{public}"\n')
    for trust in (["--public-key", public], ["--config", str(config)]):
        proc = _cli("verify", str(tmp_bundle_copy), *trust)
        assert proc.returncode == 0 and "manifest.sig verifies" in proc.stdout, proc.stderr
    assert "manifest.sig" not in _cli("verify", str(tmp_bundle_copy)).stdout  # no key: sha256 only, as before

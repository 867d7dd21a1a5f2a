"""Signed test bundles and their archives (good and deliberately bad) for the OTA tests."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

from edgeomni.bundle.manifest import MANIFEST_NAME
from edgeomni.ota.announcement import Announcement
from edgeomni.ota.signing import SIGNATURE_NAME, generate_keypair, load_private_key, sign_manifest


def make_keys(directory: Path) -> tuple[Path, str]:
    """A fresh key pair; returns (private key path, public key base64)."""
    private, _public, public_b64 = generate_keypair(directory)
    return private, public_b64


def versioned_copy(source: Path, target: Path, version: str, key: Path) -> Path:
    """A full copy of `source` with its manifest's version bumped, signed with `key`."""
    shutil.copytree(source, target, copy_function=shutil.copyfile)
    (target / SIGNATURE_NAME).unlink(missing_ok=True)
    manifest_path = target / MANIFEST_NAME
    raw = json.loads(manifest_path.read_text())
    raw["version"] = version
    manifest_path.write_text(json.dumps(raw, indent=2) + "\n")
    sign_manifest(target, load_private_key(key))
    return target


def pack(bundle: Path, archive: Path, changed: str | None = None, extra: dict[str, bytes] | None = None) -> str:
    """Tar the bundle (manifest, signature, every listed file) like the publisher does; `changed` names a file
    whose bytes are altered (same size) after signing, `extra` adds members. Returns the archive's sha256."""
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    members = [MANIFEST_NAME, SIGNATURE_NAME, *sorted(c["file"] for c in manifest["components"].values())]
    with tarfile.open(archive, "w") as tar:
        for name in members:
            data = (bundle / name).read_bytes()
            if name == changed:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            _add(tar, name, data)
        for name, data in (extra or {}).items():
            _add(tar, name, data)
    return hashlib.sha256(archive.read_bytes()).hexdigest()


def announcement_for(bundle: Path, archive: Path, base_url: str, sha256: str | None = None,
                     signature: str | None = None) -> Announcement:
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    return Announcement(manifest["name"], manifest["version"], f"{base_url}/{archive.name}",
                        sha256 or hashlib.sha256(archive.read_bytes()).hexdigest(),
                        signature or (bundle / SIGNATURE_NAME).read_text().strip(), archive.stat().st_size)


def first_engine_file(bundle: Path) -> str:
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    return next(c["file"] for c in manifest["components"].values() if c["role"] == "vad")


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def identity(bundle: Path) -> tuple[str, str]:
    """(name, version) from a bundle's manifest."""
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    return manifest["name"], manifest["version"]


def bumped(version: str) -> str:
    """The next version after `version` (its last number + 1, or `.1` appended): what a new release would carry."""
    head, _, last = version.rpartition(".")
    return f"{head}.{int(last) + 1}" if head and last.isdigit() else f"{version}.1"

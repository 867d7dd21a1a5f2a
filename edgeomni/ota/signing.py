"""Ed25519 signatures over a bundle's manifest.

The signed payload is the exact bytes of ``manifest.json``: the manifest lists every file's size and
sha256, so one signature covers the whole bundle once `verify_bundle` has checked the files against it.
A signed bundle carries its signature next to the manifest as ``manifest.sig`` (base64, one line).

Keys: the private key is a PKCS#8 PEM file (mode 0600); the public key is given to devices either as
the base64 of its 32 raw bytes (fits in a config line) or as the path of a PEM file.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from edgeomni.bundle.manifest import MANIFEST_NAME
from edgeomni.errors import OtaError

if TYPE_CHECKING:  # cryptography is imported lazily: only signing and OTA need it
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNATURE_NAME = "manifest.sig"
PRIVATE_KEY_NAME = "ota-signing.key"
PUBLIC_KEY_NAME = "ota-signing.pub"
_RAW_KEY_BYTES = 32
_SIGNATURE_BYTES = 64


def generate_keypair(out_dir: Path) -> tuple[Path, Path, str]:
    """Write a new private key (0600) and its public key (PEM) into `out_dir`; return both paths and the
    public key as base64 (what a device config's `ota.public_key` takes). Never overwrites a key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    out_dir = Path(out_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out_dir / PRIVATE_KEY_NAME, out_dir / PUBLIC_KEY_NAME
    for path in (private_path, public_path):
        if path.exists():
            raise OtaError(f"{path} already exists; refusing to overwrite a signing key (use another --out)")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    # Created with 0600 from the start: the key is never readable by others, not even for a moment.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public = key.public_key()
    public_path.write_bytes(public.public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo))
    return private_path, public_path, public_key_base64(public)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = Path(path).expanduser()
    if not path.is_file():
        raise OtaError(f"signing key {path}: no such file (create one: edgeomni bundle keygen --out DIR)")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise OtaError(f"signing key {path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise OtaError(f"signing key {path}: expected an Ed25519 key, got {type(key).__name__}")
    return key


def load_public_key(spec: str) -> Ed25519PublicKey:
    """`spec` is the base64 of the 32 raw key bytes, or the path of a PEM public key file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    spec = spec.strip()
    raw = _b64(spec)
    if raw is not None and len(raw) == _RAW_KEY_BYTES:
        return Ed25519PublicKey.from_public_bytes(raw)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise OtaError(f"public key {spec!r}: expected base64 of 32 raw Ed25519 bytes or a PEM file path; "
                       "it is neither")
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except ValueError as exc:
        raise OtaError(f"public key {path}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise OtaError(f"public key {path}: expected an Ed25519 key, got {type(key).__name__}")
    return key


def public_key_base64(key: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def sign_manifest(bundle_dir: Path, key: Ed25519PrivateKey, sequence: int | None = None) -> str:
    """Sign the bundle's manifest bytes, write `manifest.sig` and return the signature (base64). With
    `sequence`, the manifest's release counter is set first (devices refuse a signed sequence older than the
    newest they installed)."""
    bundle_dir = Path(bundle_dir).expanduser()
    if sequence is not None:
        _set_sequence(bundle_dir / MANIFEST_NAME, sequence)
    signature = base64.b64encode(key.sign(_manifest_bytes(bundle_dir))).decode("ascii")
    (bundle_dir / SIGNATURE_NAME).write_text(signature + "\n")
    return signature


def verify_manifest_signature(bundle_dir: Path, signature_b64: str, key: Ed25519PublicKey) -> None:
    """Raise OtaError unless `signature_b64` is the key's signature over this bundle's manifest bytes."""
    verify_signature(_manifest_bytes(Path(bundle_dir)), signature_b64, key, f"bundle {bundle_dir}")


def verify_signature(manifest: bytes, signature_b64: str, key: Ed25519PublicKey, where: str) -> None:
    """Raise OtaError unless `signature_b64` is the key's signature over the `manifest` bytes."""
    from cryptography.exceptions import InvalidSignature

    signature = _b64(signature_b64.strip())
    if signature is None or len(signature) != _SIGNATURE_BYTES:
        raise OtaError(f"signature: expected base64 of {_SIGNATURE_BYTES} bytes, got {signature_b64[:24]!r}…")
    try:
        key.verify(signature, manifest)
    except InvalidSignature:
        raise OtaError(f"{where}: the signature does not match its manifest under the trusted public "
                       "key (wrong key, or the manifest was changed after signing)") from None


def read_signature(bundle_dir: Path) -> str:
    path = Path(bundle_dir).expanduser() / SIGNATURE_NAME
    if not path.is_file():
        raise OtaError(f"{path}: missing; the bundle is not signed (edgeomni bundle sign DIR --key KEY)")
    return path.read_text().strip()


def _manifest_bytes(bundle_dir: Path) -> bytes:
    path = bundle_dir / MANIFEST_NAME
    if not path.is_file():
        raise OtaError(f"{path}: missing; {bundle_dir} is not a bundle")
    return path.read_bytes()


def _set_sequence(path: Path, sequence: int) -> None:
    if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 0:
        raise OtaError(f"--sequence: expected a non-negative integer, got {sequence!r}")
    if not path.is_file():
        raise OtaError(f"{path}: missing; {path.parent} is not a bundle")
    raw = json.loads(path.read_text())
    raw["sequence"] = sequence
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(raw, indent=2) + "\n")
    tmp.replace(path)


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None

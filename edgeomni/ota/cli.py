"""CLI for signed bundle updates: `edgeomni trainer publish`, `edgeomni bundle keygen|sign`."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgeomni.bundle import VerifiedBundle, verify_bundle
from edgeomni.config import RunConfig
from edgeomni.ota.publish import run_publish
from edgeomni.ota.signing import (
    SIGNATURE_NAME,
    generate_keypair,
    load_private_key,
    load_public_key,
    public_key_base64,
    read_signature,
    sign_manifest,
    verify_manifest_signature,
)


def _cmd_publish(args: argparse.Namespace) -> int:
    return run_publish(args)


def _cmd_keygen(args: argparse.Namespace) -> int:
    private_path, public_path, public_b64 = generate_keypair(args.out)
    print(f"private key: {private_path} (keep it secret; it signs bundles)")
    print(f"public key:  {public_path}")
    print(f'device config:\n[ota]\npublic_key = "{public_b64}"')
    return 0


def _cmd_sign(args: argparse.Namespace) -> int:
    key = load_private_key(args.key)
    bundle = verify_bundle(args.dir)  # sign only what verifies: the signature vouches for every file's sha256
    sign_manifest(bundle.path, key, args.sequence)
    print(f"signed {bundle.manifest.name}@{bundle.manifest.version}: {bundle.path / SIGNATURE_NAME} "
          f"(public key {public_key_base64(key.public_key())})")
    return 0


def add_verify_arguments(verify: argparse.ArgumentParser) -> None:
    """`edgeomni bundle verify DIR`: with a trusted key, the signature is checked too."""
    verify.add_argument("--public-key", metavar="KEY", help="also check manifest.sig under this Ed25519 public key "
                        "(base64 of its 32 bytes, or a PEM file)")
    verify.add_argument("--config", type=Path, help="TOML config: its [ota] public_key, if set, is the trusted key")


def signature_note(bundle: VerifiedBundle, args: argparse.Namespace) -> str:
    """Check manifest.sig when a public key is given or configured; the note `bundle verify` prints for it."""
    spec = args.public_key or RunConfig.load(args.config).ota.public_key
    if not spec:
        return ""
    verify_manifest_signature(bundle.path, read_signature(bundle.path), load_public_key(spec))
    return f"; {SIGNATURE_NAME} verifies under the trusted key"


def add_publish_parser(actions: argparse._SubParsersAction) -> None:
    """Register `publish` under `edgeomni trainer` (the trainer CLI calls this)."""
    publish = actions.add_parser("publish", help="sign a bundle, serve it and announce it to the fleet over MQTT")
    publish.add_argument("bundle", type=Path, help="bundle directory to publish")
    publish.add_argument("--key", type=Path, required=True, help="Ed25519 private key (PEM) from `bundle keygen`")
    publish.add_argument("--broker", required=True, metavar="URL", help="mqtt://[user:pass@]host:port or mqtts://")
    publish.add_argument("--fleet", default="default", help="fleet name in the topic (default: %(default)s)")
    publish.add_argument("--serve", metavar="HOST:PORT",
                         help="serve the archive over HTTP from this process until Ctrl+C (port 0: any free port)")
    publish.add_argument("--url", metavar="BASE", help="base URL devices download from (with --serve: the public "
                         "address of this server; without: where you upload the archive)")
    publish.add_argument("--out", type=Path, default=None, help="where to write the archive (default: a temp dir)")
    publish.add_argument("--ca-file", default="", help="CA certificate for an mqtts:// broker")
    _add_sequence(publish)
    publish.set_defaults(func=_cmd_publish)


def _add_sequence(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sequence", type=int, metavar="N", help="set the manifest's release counter before "
                        "signing: raise it with every release; devices refuse a signed sequence lower than the "
                        "newest they installed, whatever the version string says")


def add_signing_parsers(bundle_actions: argparse._SubParsersAction) -> None:
    """Register `keygen` and `sign` under `edgeomni bundle`."""
    keygen = bundle_actions.add_parser("keygen", help="create an Ed25519 key pair for signing bundles")
    keygen.add_argument("--out", type=Path, required=True, help="directory for the key files (never overwritten)")
    keygen.set_defaults(func=_cmd_keygen)
    sign = bundle_actions.add_parser("sign", help="verify a bundle and sign its manifest (writes manifest.sig)")
    sign.add_argument("dir", type=Path)
    sign.add_argument("--key", type=Path, required=True, help="Ed25519 private key (PEM)")
    _add_sequence(sign)
    sign.set_defaults(func=_cmd_sign)

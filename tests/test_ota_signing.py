"""Signing, the announcement schema, the [ota] config and the installer's checks (no broker needed)."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from ota_factory import announcement_for, first_engine_file, make_keys, pack, versioned_copy

from edgeomni.config import RunConfig
from edgeomni.errors import ConfigError, OtaError
from edgeomni.ota.announcement import Announcement, bundle_topic, version_key
from edgeomni.ota.install import BundleInstaller
from edgeomni.ota.publish import ArchiveServer, pack_bundle
from edgeomni.ota.signing import (
    generate_keypair,
    load_private_key,
    load_public_key,
    read_signature,
    sign_manifest,
    verify_manifest_signature,
)

GOOD = {"name": "default", "version": "7.0.0", "url": "http://127.0.0.1:1/default-7.0.0.tar", "sha256": "a" * 64,
        "signature": base64.b64encode(b"s" * 64).decode(), "size": 1000}


@pytest.fixture(scope="module")
def signed(default_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """(bundle 7.0.0 signed, private key, public key base64), shared by this module's tests (read-only)."""
    root = tmp_path_factory.mktemp("signed")
    key, public = make_keys(root / "keys")
    return versioned_copy(default_bundle, root / "bundle", "7.0.0", key), key, public


# -- keys and signatures -----------------------------------------------------------------------------------
def test_keygen_writes_a_private_key_only_the_owner_can_read_and_never_overwrites(tmp_path: Path) -> None:
    private, public, public_b64 = generate_keypair(tmp_path)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert len(base64.b64decode(public_b64)) == 32
    assert load_public_key(public_b64) is not None and load_public_key(str(public)) is not None
    with pytest.raises(OtaError, match="refusing to overwrite"):
        generate_keypair(tmp_path)


def test_signature_verifies_and_any_manifest_change_breaks_it(signed: tuple[Path, Path, str],
                                                               tmp_path: Path) -> None:
    bundle, _key, public = signed
    verify_manifest_signature(bundle, read_signature(bundle), load_public_key(public))
    _, _, other_public = generate_keypair(tmp_path / "other")
    with pytest.raises(OtaError, match="does not match its manifest"):
        verify_manifest_signature(bundle, read_signature(bundle), load_public_key(other_public))
    copy = tmp_path / "copy"
    copy.mkdir()
    manifest = (bundle / "manifest.json").read_bytes()
    (copy / "manifest.json").write_bytes(manifest.replace(b'"7.0.0"', b'"9.9.9"'))
    with pytest.raises(OtaError, match="does not match its manifest"):
        verify_manifest_signature(copy, read_signature(bundle), load_public_key(public))
    with pytest.raises(OtaError, match="signature: expected base64 of 64 bytes"):
        verify_manifest_signature(bundle, "not base64!", load_public_key(public))


def test_key_files_that_are_not_keys_are_named(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("hello")
    with pytest.raises(OtaError, match=r"junk\.pem: not an unencrypted PEM private key"):
        load_private_key(junk)
    with pytest.raises(OtaError, match="no such file"):
        load_private_key(tmp_path / "missing.key")
    with pytest.raises(OtaError, match="neither"):
        load_public_key("abc")


def test_sign_refuses_nothing_silently_and_overwrites_a_stale_signature(signed: tuple[Path, Path, str],
                                                                         tmp_path: Path) -> None:
    _bundle, key, public = signed
    bundle = versioned_copy(signed[0], tmp_path / "b", "1.2.0", key)
    first = read_signature(bundle)
    (bundle / "manifest.json").write_text((bundle / "manifest.json").read_text().replace("1.2.0", "1.2.1"))
    second = sign_manifest(bundle, load_private_key(key))
    assert first != second and read_signature(bundle) == second
    verify_manifest_signature(bundle, second, load_public_key(public))


# -- the announcement ----------------------------------------------------------------------------------------
def test_announcement_round_trip_and_topic() -> None:
    parsed = Announcement.from_json(Announcement.from_dict(GOOD).to_json())
    assert parsed == Announcement.from_dict(GOOD) and parsed.tag == "default@7.0.0"
    assert bundle_topic("fleet-1", "default") == "edgeomni/fleet-1/bundles/default"


@pytest.mark.parametrize(("change", "message"), [
    ({"sha256": None}, "missing field(s) sha256"),
    ({"sha256": "ABC"}, "announcement.sha256: expected 64 lowercase hex digits"),
    ({"url": "ftp://x/y.tar"}, "announcement.url: expected an http:// or https:// URL"),
    ({"name": "a/b"}, "announcement.name: expected 1-64 characters"),
    ({"name": "#"}, "announcement.name"),
    ({"version": "../1"}, "announcement.version"),
    ({"signature": ""}, "announcement.signature: expected a base64 string"),
    ({"size": True}, "announcement.size: expected a positive integer"),
    ({"size": -5}, "announcement.size"),
    ({"colour": "red"}, "unknown field(s) colour"),
])
def test_bad_announcements_name_the_field(change: dict[str, object], message: str) -> None:
    raw = {**GOOD, **change}
    raw = {k: v for k, v in raw.items() if v is not None}
    with pytest.raises(OtaError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Announcement.from_dict(raw)


def test_announcement_that_is_not_json_or_too_big_is_refused() -> None:
    with pytest.raises(OtaError, match="not valid JSON"):
        Announcement.from_json(b"{oops")
    with pytest.raises(OtaError, match="expected a JSON object"):
        Announcement.from_json(b"[1, 2]")
    with pytest.raises(OtaError, match="expected at most"):
        Announcement.from_json(b" " * 20_000)


def test_versions_compare_numerically() -> None:
    assert version_key("1.10.0") > version_key("1.9.3") > version_key("1.9")
    assert version_key("2.0.0") > version_key("1.99.99")


# -- the [ota] config ----------------------------------------------------------------------------------------
def test_ota_config_validates_itself(signed: tuple[Path, Path, str]) -> None:
    with pytest.raises(ConfigError, match=r"ota\.public_key: expected the publisher's Ed25519 public key"):
        RunConfig.from_dict({"ota": {"broker": "mqtt://127.0.0.1:1883"}})
    with pytest.raises(ConfigError, match=r"ota\.public_key: public key 'nope'"):
        RunConfig.from_dict({"ota": {"public_key": "nope"}})
    with pytest.raises(ConfigError, match=r"ota\.fleet"):
        RunConfig.from_dict({"ota": {"fleet": "a/b"}})
    with pytest.raises(ConfigError, match=r"ota\.broker"):
        RunConfig.from_dict({"ota": {"broker": "http://host", "public_key": signed[2]}})
    config = RunConfig.from_dict({"ota": {"broker": "mqtt://dev:pw@127.0.0.1:1883", "public_key": signed[2]}})
    assert config.ota.enabled and "[ota]" in config.to_toml()


# -- the installer: download, sha256, unpack, signature, every file ------------------------------------------
@pytest.fixture
def served(signed: tuple[Path, Path, str], tmp_path: Path):  # -> (bundle, public, www dir, base url)
    www = tmp_path / "www"
    www.mkdir()
    with ArchiveServer(www) as server:
        yield signed[0], signed[2], www, server.base_url


def _installer(tmp_path: Path, public: str, max_bytes: int = 10**9) -> BundleInstaller:
    return BundleInstaller(tmp_path / "cache", load_public_key(public), max_bytes, timeout_s=60)


def test_publisher_archive_installs_as_a_verified_versioned_directory(served, tmp_path: Path) -> None:
    bundle, public, www, base = served
    archive, digest = pack_bundle(bundle, www)
    installed = _installer(tmp_path, public).install(announcement_for(bundle, archive, base, digest))
    assert installed.path == tmp_path / "cache" / "default@7.0.0"
    assert installed.manifest.version == "7.0.0"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["default@7.0.0"]  # no leftovers


@pytest.mark.parametrize("fault", ["bad-signature", "changed-file", "wrong-sha256", "extra-file", "traversal",
                                   "missing", "too-big"])
def test_bad_bundles_are_refused_and_nothing_is_installed(served, tmp_path: Path, fault: str) -> None:
    bundle, public, www, base = served
    archive = www / "default-7.0.0.tar"
    extra = {"notes.txt": b"x"} if fault == "extra-file" else {"../escape.txt": b"x"} if fault == "traversal" else {}
    digest = pack(bundle, archive, changed=first_engine_file(bundle) if fault == "changed-file" else None,
                  extra=extra)
    announcement = announcement_for(bundle, archive, base, digest)
    expected = {
        "changed-file": r"sha256 expected .* \(the file was changed\)",
        "extra-file": "files its manifest does not list: notes.txt",
        "traversal": "only regular files with relative paths",
    }
    if fault == "bad-signature":
        _, _, other = generate_keypair(tmp_path / "other-keys")
        installer, expected[fault] = _installer(tmp_path, other), "does not match its manifest"
    else:
        installer = _installer(tmp_path, public, max_bytes=1000 if fault == "too-big" else 10**9)
    if fault == "wrong-sha256":
        announcement = announcement_for(bundle, archive, base, "0" * 64)
        expected[fault] = "archive sha256 is .* the announcement says 0000"
    if fault == "missing":
        announcement = announcement_for(bundle, archive, base + "/nowhere", digest)
        expected[fault] = "download from .* failed .*404"
    if fault == "too-big":
        expected[fault] = "over the limit of 1000"
    with pytest.raises(OtaError, match=expected[fault]):
        installer.install(announcement)
    cache = tmp_path / "cache"
    assert not cache.exists() or list(cache.iterdir()) == []  # nothing half-installed stays behind


def test_updater_refuses_downgrades_and_names_that_do_not_match_the_topic(default_bundle: Path,
                                                                         signed: tuple[Path, Path, str],
                                                                         tmp_path: Path) -> None:
    import asyncio

    from edgeomni.bundle import verify_bundle
    from edgeomni.ota.config import OtaConfig
    from edgeomni.ota.updater import BundleUpdater

    running = verify_bundle(default_bundle)
    switched: list[object] = []

    async def switch(bundle: object) -> None:
        switched.append(bundle)

    async def report(_event: object) -> None:
        pass

    async def scenario() -> None:
        config = OtaConfig(broker="mqtt://127.0.0.1:1", fleet="f", public_key=signed[2], cache_dir=str(tmp_path))
        updater = BundleUpdater(config, running, switch, report)
        topic = updater.topic
        older = {**GOOD, "name": running.manifest.name, "version": "0.0.1"}
        with pytest.raises(OtaError, match=r"announcement.version: 0.0.1 is older than the running"):
            await updater.handle(topic, Announcement.from_dict(older).to_json())
        foreign = {**GOOD, "name": "other-bundle"}
        with pytest.raises(OtaError, match=r"announcement.name: 'other-bundle' arrived on .*, which is for"):
            await updater.handle(topic, Announcement.from_dict(foreign).to_json())
        same = {**GOOD, "name": running.manifest.name, "version": running.manifest.version}
        await updater.handle(topic, Announcement.from_dict(same).to_json())  # the bundle it runs: nothing to do
        assert switched == [] and list(tmp_path.iterdir()) == []

    asyncio.run(scenario())

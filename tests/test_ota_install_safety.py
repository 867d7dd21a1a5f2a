"""What an unauthenticated archive can do to a device: nothing from it may reach the disk before the signed
manifest verified, and then only the files that manifest lists, at their listed sizes."""

from __future__ import annotations

from pathlib import Path

import pytest
from ota_factory import TreeWatch, announcement_for, first_engine_file, junk_archive, make_keys, pack, versioned_copy

from edgeomni.errors import OtaError
from edgeomni.ota.announcement import Announcement
from edgeomni.ota.install import BundleInstaller
from edgeomni.ota.publish import ArchiveServer
from edgeomni.ota.signing import load_public_key


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def signed(default_bundle: Path, keys: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Bundle 7.0.0, signed by the trusted key (read-only for the tests)."""
    return versioned_copy(default_bundle, tmp_path_factory.mktemp("signed") / "bundle", "7.0.0", keys[0])


@pytest.fixture
def www(tmp_path: Path):  # -> (www dir, base url)
    folder = tmp_path / "www"
    folder.mkdir()
    with ArchiveServer(folder) as server:
        yield folder, server.base_url


def _installer(cache: Path, public: str, max_bytes: int = 10**9, timeout_s: float = 60) -> BundleInstaller:
    return BundleInstaller(cache, load_public_key(public), max_bytes, timeout_s=timeout_s)


# -- the archive is untrusted until its manifest's signature verified -----------------------------------------
def test_nothing_is_unpacked_before_the_signature_verified(signed: Path, keys: tuple[Path, str], www,
                                                           tmp_path: Path) -> None:
    """A forged manifest followed by 20,000 empty members: refused on the signature, with no member written."""
    folder, base = www
    stranger, _ = make_keys(tmp_path / "stranger")
    forged = versioned_copy(signed, tmp_path / "forged", "7.0.0", stranger)
    archive = folder / "default-7.0.0.tar"
    digest = junk_archive(archive, forged, 20_000)
    cache = tmp_path / "cache"
    with TreeWatch(cache) as watch, pytest.raises(OtaError, match="does not match its manifest"):
        _installer(cache, keys[1]).install(announcement_for(forged, archive, base, digest))
    assert watch.most_files == 0, f"{watch.most_files} files were written before the signature was checked"


def test_members_the_signed_manifest_does_not_list_are_refused_before_extraction(signed: Path,
                                                                                 keys: tuple[Path, str], www,
                                                                                 tmp_path: Path) -> None:
    folder, base = www
    archive = folder / "default-7.0.0.tar"
    digest = junk_archive(archive, signed, 20_000)
    cache = tmp_path / "cache"
    unlisted = r"does not list: junk/000000 \(only files listed in the signed manifest"
    with TreeWatch(cache) as watch, pytest.raises(OtaError, match=unlisted):
        _installer(cache, keys[1]).install(announcement_for(signed, archive, base, digest))
    assert watch.most_files <= 2, f"{watch.most_files} files were written"  # the manifest and its signature


def test_a_sparse_member_is_refused_and_never_unpacked_to_its_declared_size(signed: Path, keys: tuple[Path, str],
                                                                            www, tmp_path: Path) -> None:
    folder, base = www
    archive = folder / "default-7.0.0.tar"
    digest = pack(signed, archive, sparse=first_engine_file(signed),
                  extra={f"pad/{i:05d}": b"" for i in range(5_000)})  # keeps an unpacking installer busy
    cache = tmp_path / "cache"
    with TreeWatch(cache) as watch, pytest.raises(OtaError, match="sparse"):
        _installer(cache, keys[1]).install(announcement_for(signed, archive, base, digest))
    assert watch.most_bytes < 10**8, f"{watch.most_bytes} bytes (apparent) were written"


def test_a_listed_file_larger_than_the_manifest_says_is_refused_before_it_is_written(signed: Path,
                                                                                     keys: tuple[Path, str], www,
                                                                                     tmp_path: Path) -> None:
    folder, base = www
    archive = folder / "default-7.0.0.tar"
    grown = first_engine_file(signed)
    digest = pack(signed, archive, grown=grown)
    with pytest.raises(OtaError, match=rf"{grown}: the archive holds \d+ bytes, the signed manifest lists \d+"):
        _installer(tmp_path / "cache", keys[1]).install(announcement_for(signed, archive, base, digest))


def test_an_announcement_without_size_is_refused() -> None:
    raw = {"name": "default", "version": "7.0.0", "url": "http://127.0.0.1:1/x.tar", "sha256": "a" * 64,
           "signature": "c2ln"}
    with pytest.raises(OtaError, match=r"missing field\(s\) size"):
        Announcement.from_dict(raw)

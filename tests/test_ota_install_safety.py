"""What an unauthenticated archive, a slow server, an old signed bundle or a second installer can do to a device.

Nothing from the archive may reach the disk before the signed manifest verified; the download deadline holds
whatever the server does; a bundle older than the newest one this device ever installed is refused after a
restart too; two processes installing one bundle both end up with it.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from ota_factory import (
    RawHttpServer,
    TreeWatch,
    announcement_for,
    first_engine_file,
    junk_archive,
    make_keys,
    pack,
    redirect,
    trickle,
    versioned_copy,
)

from edgeomni.bundle import VerifiedBundle, verify_bundle
from edgeomni.errors import OtaError
from edgeomni.events import OtaEvent
from edgeomni.ota.announcement import Announcement, version_key
from edgeomni.ota.config import OtaConfig
from edgeomni.ota.install import BundleInstaller, DownloadError
from edgeomni.ota.publish import ArchiveServer, pack_bundle
from edgeomni.ota.signing import load_public_key, read_signature, verify_manifest_signature
from edgeomni.ota.updater import BundleUpdater

ROOT = Path(__file__).resolve().parents[1]


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


# -- the download deadline is wall-clock, and shutting down never waits for a server --------------------------
def test_download_deadline_holds_against_a_server_that_trickles(signed: Path, keys: tuple[Path, str],
                                                                tmp_path: Path) -> None:
    """One byte every 0.1 s: each read returns something, so a deadline checked between reads never comes."""
    outcome: list[BaseException] = []
    with RawHttpServer(trickle(10**6, 0.1)) as server:
        announcement = Announcement("default", "7.0.0", f"{server.base_url}/default-7.0.0.tar", "a" * 64,
                                    "c2ln", 10**6)
        installer = _installer(tmp_path / "cache", keys[1], timeout_s=2)

        def attempt() -> None:
            try:
                installer.install(announcement)
            except BaseException as exc:  # handed to the test thread
                outcome.append(exc)

        started = time.monotonic()
        worker = threading.Thread(target=attempt, daemon=True)
        worker.start()
        worker.join(8)
        elapsed = time.monotonic() - started
    assert not worker.is_alive(), "the download ran 8 s past its start with a 2 s deadline"
    assert elapsed < 5 and isinstance(outcome[0], DownloadError) and "longer than 2 s" in str(outcome[0])


def test_process_exit_does_not_wait_for_a_slow_download(default_bundle: Path, keys: tuple[Path, str],
                                                        tmp_path: Path) -> None:
    """The updater closes while an install is downloading from a trickling server: the process ends at once."""
    script = textwrap.dedent(f"""
        import asyncio, time
        from edgeomni.bundle import verify_bundle
        from edgeomni.ota.announcement import Announcement
        from edgeomni.ota.config import OtaConfig
        from edgeomni.ota.updater import BundleUpdater

        async def main():
            async def switch(bundle): pass
            async def report(event): print(event.status, flush=True)
            config = OtaConfig(broker="mqtt://127.0.0.1:1", public_key={keys[1]!r}, cache_dir={str(tmp_path)!r})
            updater = BundleUpdater(config, verify_bundle({str(default_bundle)!r}), switch, report)
            announcement = Announcement("default", "9.0.0", URL, "a" * 64, "c2ln", 10**6)
            task = asyncio.create_task(updater.handle(updater.topic, announcement.to_json()))
            await asyncio.sleep(1.5)
            started = time.monotonic()
            await updater.close()
            task.cancel()
            print("closed", round(time.monotonic() - started, 2), flush=True)

        asyncio.run(main())
    """)
    with RawHttpServer(trickle(10**6, 0.2)) as server:
        started = time.monotonic()
        try:
            proc = subprocess.run([sys.executable, "-c", script.replace("URL", repr(f"{server.base_url}/x.tar"))],
                                  capture_output=True, text=True, timeout=15, cwd=ROOT)
        except subprocess.TimeoutExpired:
            pytest.fail("the process was still waiting for the download 15 s after it started")
        elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert "downloading" in proc.stdout and "closed" in proc.stdout
    assert elapsed < 8, f"exit took {elapsed:.1f} s: {proc.stdout}"


def test_a_redirect_to_another_scheme_is_refused(keys: tuple[Path, str], tmp_path: Path) -> None:
    with RawHttpServer(redirect("ftp://127.0.0.1/bundle.tar")) as server:
        announcement = Announcement("default", "7.0.0", f"{server.base_url}/x.tar", "a" * 64, "c2ln", 1000)
        with pytest.raises(DownloadError, match=r"redirected to 'ftp://127\.0\.0\.1/bundle\.tar'"):
            _installer(tmp_path / "cache", keys[1]).install(announcement)


# -- rollback: the newest version this device ever installed is remembered ------------------------------------
def test_versions_order_like_semver() -> None:
    assert version_key("1.0.0-rc1") < version_key("1.0.0") < version_key("1.0.1")
    assert version_key("1.0.0-alpha") < version_key("1.0.0-alpha.1") < version_key("1.0.0-beta")
    assert version_key("1.0.0-rc.2") < version_key("1.0.0-rc.10")
    assert version_key("dev") < version_key("0.0.1") and version_key("nightly") < version_key("1.0.0-rc1")
    assert version_key("1.0.0+build7") == version_key("1.0.0") == version_key("1.0")


def _updater(cache: Path, public: str, running: VerifiedBundle, installed: list[VerifiedBundle]) -> BundleUpdater:
    async def switch(bundle: VerifiedBundle) -> None:
        installed.append(bundle)

    async def report(_event: OtaEvent) -> None:
        pass

    config = OtaConfig(broker="mqtt://127.0.0.1:1", fleet="f", public_key=public, cache_dir=str(cache))
    return BundleUpdater(config, running, switch, report)


def _offer(updater: BundleUpdater, bundle: Path, folder: Path, base: str) -> None:
    archive, digest = pack_bundle(bundle, folder)
    asyncio.run(updater.handle(updater.topic, announcement_for(bundle, archive, base, digest).to_json()))


def test_an_older_signed_bundle_is_refused_after_a_restart(default_bundle: Path, signed: Path,
                                                           keys: tuple[Path, str], www, tmp_path: Path) -> None:
    folder, base = www
    cache, installed = tmp_path / "cache", []
    _offer(_updater(cache, keys[1], verify_bundle(default_bundle), installed), signed, folder, base)
    assert [b.manifest.version for b in installed] == ["7.0.0"]
    # The device restarts on its old bundle; the replayed 6.5.0 is older than what it installed.
    older = versioned_copy(default_bundle, tmp_path / "older", "6.5.0", keys[0])
    restarted = _updater(cache, keys[1], verify_bundle(default_bundle), installed)
    with pytest.raises(OtaError, match=r"6\.5\.0 is older than 7\.0\.0, the newest this device installed"):
        _offer(restarted, older, folder, base)
    assert len(installed) == 1


def test_the_signed_release_sequence_refuses_a_rollback_the_version_string_would_allow(
        default_bundle: Path, keys: tuple[Path, str], www, tmp_path: Path) -> None:
    folder, base = www
    cache, installed = tmp_path / "cache", []
    current = versioned_copy(default_bundle, tmp_path / "current", "7.0.0", keys[0], sequence=5)
    _offer(_updater(cache, keys[1], verify_bundle(default_bundle), installed), current, folder, base)
    stale = versioned_copy(default_bundle, tmp_path / "stale", "7.0.1", keys[0], sequence=3)
    restarted = _updater(cache, keys[1], verify_bundle(default_bundle), installed)
    with pytest.raises(OtaError, match="release sequence 3 is older than 5"):
        _offer(restarted, stale, folder, base)
    assert [b.manifest.version for b in installed] == ["7.0.0"]
    newer = versioned_copy(default_bundle, tmp_path / "newer", "7.0.2", keys[0], sequence=6)
    _offer(restarted, newer, folder, base)
    assert [b.manifest.version for b in installed] == ["7.0.0", "7.0.2"]


# -- two processes installing the same bundle ----------------------------------------------------------------
def test_two_installers_of_one_bundle_both_get_it(signed: Path, keys: tuple[Path, str], www,
                                                  tmp_path: Path) -> None:
    folder, base = www
    archive, digest = pack_bundle(signed, folder)
    announcement = announcement_for(signed, archive, base, digest)
    cache = tmp_path / "cache"
    for _round in range(3):
        results: list[object] = []
        start = threading.Barrier(2)

        def install(results: list[object] = results, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                results.append(_installer(cache, keys[1]).install(announcement).path)
            except Exception as exc:  # the assertion below shows it
                results.append(exc)

        workers = [threading.Thread(target=install) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert results == [cache / "default@7.0.0"] * 2, results
        shutil.rmtree(cache)  # the next round races on a fresh cache again


def test_bundle_sign_sets_the_signed_release_sequence(tmp_bundle_copy: Path, keys: tuple[Path, str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "edgeomni", "bundle", "sign", str(tmp_bundle_copy), "--key",
                           str(keys[0]), "--sequence", "12"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    signed = verify_bundle(tmp_bundle_copy)
    assert signed.manifest.sequence == 12 and signed.manifest.to_dict()["sequence"] == 12
    verify_manifest_signature(tmp_bundle_copy, read_signature(tmp_bundle_copy), load_public_key(keys[1]))

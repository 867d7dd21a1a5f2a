"""Installing an announced bundle: download, check, unpack, verify. Blocking; the updater runs it in a thread.

Nothing from the archive reaches the disk before the signature verified. In order: the archive's size and
sha256 (against the announcement); its first member must be manifest.json, whose bytes must carry the trusted
key's Ed25519 signature and the announced name and version; from then on the signed manifest decides: each
further member must be a plain regular file it lists (or manifest.sig), of exactly the listed size, and is
written while hashed, refused at the first byte past that size or on a wrong sha256; a listed file missing is
refused. Only then is the new directory renamed into place as `<cache>/<name>@<version>`; on any failure it
is deleted and the running bundle is untouched. One lock on the cache directory serialises installers (two
processes, or two runs of one device), and a bundle already installed is checked in full and used.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING

from edgeomni.bundle import VerifiedBundle, verify_bundle
from edgeomni.bundle.manifest import MANIFEST_NAME, Component, Manifest
from edgeomni.errors import BundleError, OtaError
from edgeomni.ota.announcement import Announcement
from edgeomni.ota.download import DownloadError, fetch
from edgeomni.ota.signing import SIGNATURE_NAME, verify_manifest_signature, verify_signature

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["BundleInstaller", "DownloadError", "background_executor"]

_CHUNK = 1 << 20
_BACKGROUND_NICE = 10
_MAX_MANIFEST_BYTES = 1 << 20  # a manifest is tens of kB; the cap bounds what is read before the signature
_MAX_SIGNATURE_BYTES = 4096
_LOCK_POLL_S = 0.1

CheckManifest = Callable[[Manifest], None]


def background_executor() -> ThreadPoolExecutor:
    """One thread for installs, at a lower CPU priority than inference: hashing and unpacking a bundle must
    not take cores from the captions of the streams that are running meanwhile."""
    return ThreadPoolExecutor(1, thread_name_prefix="ota-install", initializer=_lower_priority)


def _lower_priority() -> None:
    # Linux schedules threads individually, so this lowers only the install thread (it starts no other threads).
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _BACKGROUND_NICE)


class BundleInstaller:
    def __init__(self, cache_dir: Path, public_key: Ed25519PublicKey, max_bytes: int, timeout_s: float) -> None:
        self.cache_dir, self.public_key = Path(cache_dir).expanduser(), public_key
        self.max_bytes, self.timeout_s = max_bytes, timeout_s
        self.cancelled = threading.Event()  # set on shutdown: an unfinished download stops at once

    def target_for(self, announcement: Announcement) -> Path:
        return self.cache_dir / announcement.tag

    def install(self, announcement: Announcement, check_manifest: CheckManifest | None = None) -> VerifiedBundle:
        """Download, verify and unpack; `check_manifest` sees the signed manifest before anything is unpacked
        (the updater's rollback check) and refuses by raising OtaError."""
        if announcement.size > self.max_bytes:
            raise OtaError(f"{announcement.tag}: the announced size, {announcement.size} bytes, is over the limit "
                           f"of {self.max_bytes} (ota.max_mb)")
        target = self.target_for(announcement)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            if target.is_dir():  # installed before (another process, a previous run): checked in full, never trusted
                try:
                    installed = self._check(target, announcement)
                    if check_manifest is not None:
                        check_manifest(installed.manifest)
                    return installed
                except OtaError:
                    shutil.rmtree(target, ignore_errors=True)
            with tempfile.TemporaryDirectory(prefix=f".{announcement.tag}.", dir=self.cache_dir) as scratch:
                archive, staging = Path(scratch) / "bundle.tar", Path(scratch) / "bundle"
                digest = fetch(announcement.url, archive, announcement.size, self.timeout_s, self.cancelled,
                               announcement.tag)
                if digest != announcement.sha256:
                    raise OtaError(f"{announcement.tag}: archive sha256 is {digest[:16]}…, the announcement says "
                                   f"{announcement.sha256[:16]}… (corrupted or substituted download)")
                manifest = self.unpack(archive, staging, announcement, check_manifest)
                archive.unlink()
                staging.replace(target)  # atomic on one file system: the bundle appears whole or not at all
        return VerifiedBundle(path=target, manifest=manifest)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive lock on the cache directory (flock: released by the kernel if the process dies)."""
        fd = os.open(self.cache_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            waited_until = time.monotonic() + self.timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if self.cancelled.is_set():
                        raise OtaError(f"{self.cache_dir}: install cancelled (shutting down)") from None
                    if time.monotonic() > waited_until:
                        raise DownloadError(f"{self.cache_dir}: another process has been installing for "
                                            f"{self.timeout_s:.0f} s") from None
                    time.sleep(_LOCK_POLL_S)
            yield
        finally:
            os.close(fd)  # releases the lock

    def unpack(self, archive: Path, target: Path, announcement: Announcement,
               check_manifest: CheckManifest | None = None) -> Manifest:
        """Check the signed manifest, then write only the files it lists, each capped at its listed size."""
        tag = announcement.tag
        try:
            with tarfile.open(archive, "r:") as tar:
                first = tar.next()
                if first is None or first.name != MANIFEST_NAME or not _plain(first) \
                        or first.size > _MAX_MANIFEST_BYTES:
                    raise OtaError(f"{tag}: the archive must start with {MANIFEST_NAME}, a regular file of at most "
                                   f"{_MAX_MANIFEST_BYTES} bytes (got {first.name if first else 'nothing'!r})")
                manifest_bytes = _read(tar, first)
                verify_signature(manifest_bytes, announcement.signature, self.public_key, f"bundle {tag}")
                manifest = _signed_manifest(manifest_bytes, announcement)
                if check_manifest is not None:
                    check_manifest(manifest)
                target.mkdir(parents=True)
                (target / MANIFEST_NAME).write_bytes(manifest_bytes)
                listed = {c.file: c for c in manifest.components.values()}
                seen = {MANIFEST_NAME}
                while (member := tar.next()) is not None:
                    self._extract(tar, member, target, listed, seen, tag)
        except (tarfile.TarError, OSError) as exc:
            raise OtaError(f"archive {archive.name}: cannot unpack ({exc})") from None
        missing = sorted(set(listed) - seen)
        if missing:
            raise OtaError(f"{tag}: the archive lacks files its signed manifest lists: {', '.join(missing[:5])}")
        if SIGNATURE_NAME in seen:
            verify_manifest_signature(target, (target / SIGNATURE_NAME).read_text(), self.public_key)
        else:
            (target / SIGNATURE_NAME).write_text(announcement.signature + "\n")
        return manifest

    def _extract(self, tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path,
                 listed: dict[str, Component], seen: set[str], tag: str) -> None:
        path = PurePosixPath(member.name)
        if not _plain(member) or path.is_absolute() or ".." in path.parts or member.name in seen:
            what = "a sparse file" if member.issparse() else "a duplicate" if member.name in seen else "refused"
            raise OtaError(f"archive member {member.name!r} ({what}): only regular files with relative paths "
                           "inside the bundle are allowed")
        component = listed.get(member.name)
        if member.name == SIGNATURE_NAME:
            cap = _MAX_SIGNATURE_BYTES
        elif component is not None:
            cap = component.size
        else:
            raise OtaError(f"{tag}: the archive holds files its manifest does not list: {member.name} (only files "
                           "listed in the signed manifest are unpacked)")
        if member.size > cap or (component is not None and member.size != cap):
            raise OtaError(f"{tag}: {member.name}: the archive holds {member.size} bytes, the signed manifest "
                           f"lists {cap}")
        seen.add(member.name)
        dest = target / member.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        source = tar.extractfile(member)
        assert source is not None  # a regular file always has a reader
        digest = _copy(source, dest, member.size)
        if component is not None and digest != component.sha256:
            raise OtaError(f"{tag}: component {component.name!r} ({component.role}): {component.file} sha256 "
                           f"expected {component.sha256[:16]}…, got {digest[:16]}… (the file was changed)")

    def _check(self, directory: Path, announcement: Announcement) -> VerifiedBundle:
        verify_manifest_signature(directory, announcement.signature, self.public_key)
        try:
            manifest = Manifest.load(directory)
            if (manifest.name, manifest.version) != (announcement.name, announcement.version):
                raise OtaError(f"{announcement.tag}: the signed manifest is {manifest.name}@{manifest.version}, "
                               "not what was announced")
            listed = {MANIFEST_NAME, SIGNATURE_NAME, *(c.file for c in manifest.components.values())}
            extra = sorted(str(p.relative_to(directory)) for p in directory.rglob("*")
                           if not p.is_dir() and str(p.relative_to(directory)) not in listed)
            if extra:
                raise OtaError(f"{announcement.tag}: the archive holds files its manifest does not list: "
                               f"{', '.join(extra[:5])}")
            return verify_bundle(directory)
        except BundleError as exc:
            raise OtaError(f"{announcement.tag}: {exc}") from None


def _plain(member: tarfile.TarInfo) -> bool:
    """A regular file stored as such: not a link, device, directory or sparse file (whose holes unpack to any
    size its header claims)."""
    return member.type in (tarfile.REGTYPE, tarfile.AREGTYPE) and not member.issparse()


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    source = tar.extractfile(member)
    assert source is not None
    return source.read(member.size)


def _copy(source: IO[bytes], dest: Path, size: int) -> str:
    digest, left = hashlib.sha256(), size
    with dest.open("xb") as out:
        while left and (block := source.read(min(_CHUNK, left))):
            left -= len(block)
            digest.update(block)
            out.write(block)
    if left:
        raise OtaError(f"archive member {dest.name}: truncated ({left} bytes missing)")
    return digest.hexdigest()


def _signed_manifest(data: bytes, announcement: Announcement) -> Manifest:
    try:
        manifest = Manifest.from_dict(json.loads(data), source=f"{announcement.tag} {MANIFEST_NAME}")
    except (ValueError, BundleError) as exc:  # JSONDecodeError and non-UTF-8 bytes are ValueErrors
        raise OtaError(f"{announcement.tag}: the signed manifest is not a valid bundle manifest ({exc})") from None
    if (manifest.name, manifest.version) != (announcement.name, announcement.version):
        raise OtaError(f"{announcement.tag}: the signed manifest is {manifest.name}@{manifest.version}, "
                       "not what was announced")
    return manifest

"""Installing an announced bundle: download, check, unpack, verify. Blocking; the updater runs it in a thread.

Nothing is trusted until every check passed, in this order: the archive's size and sha256 (against the
announcement), a safe unpack (regular files only, inside the target, exactly the files the manifest
lists), the Ed25519 signature over manifest.json (trusted key from the device config), the manifest's name
and version (against the announcement), and every file's size and sha256 (verify_bundle). Only then is
the new directory renamed into place as `<cache>/<name>@<version>`; on any failure it is deleted and the
running bundle is untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from edgeomni.bundle import VerifiedBundle, verify_bundle
from edgeomni.bundle.manifest import MANIFEST_NAME, Manifest
from edgeomni.errors import BundleError, OtaError
from edgeomni.ota.announcement import Announcement
from edgeomni.ota.signing import SIGNATURE_NAME, verify_manifest_signature

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

_CHUNK = 1 << 20
_SOCKET_TIMEOUT_S = 30.0
_BACKGROUND_NICE = 10


class DownloadError(OtaError):
    """The archive could not be fetched (network, HTTP error, timeout): worth retrying when announced again."""


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
        self.cancelled = threading.Event()  # set on shutdown: an unfinished download stops at its next chunk

    def target_for(self, announcement: Announcement) -> Path:
        return self.cache_dir / announcement.tag

    def install(self, announcement: Announcement) -> VerifiedBundle:
        target = self.target_for(announcement)
        if target.is_dir():  # installed before (e.g. by a previous run): still checked in full, never trusted
            try:
                return self._check(target, announcement)
            except OtaError:
                shutil.rmtree(target, ignore_errors=True)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{announcement.tag}.", dir=self.cache_dir) as scratch:
            archive, staging = Path(scratch) / "bundle.tar", Path(scratch) / "bundle"
            digest = self.download(announcement, archive)
            if digest != announcement.sha256:
                raise OtaError(f"{announcement.tag}: archive sha256 is {digest[:16]}…, the announcement says "
                               f"{announcement.sha256[:16]}… (corrupted or substituted download)")
            self.unpack(archive, staging)
            archive.unlink()
            checked = self._check(staging, announcement)
            staging.replace(target)  # atomic on one file system: the bundle appears whole or not at all
        return VerifiedBundle(path=target, manifest=checked.manifest)

    def download(self, announcement: Announcement, dest: Path) -> str:
        """Stream the archive to `dest` within the size limit and the deadline; return its sha256."""
        limit = min(self.max_bytes, announcement.size) if announcement.size else self.max_bytes
        deadline = time.monotonic() + self.timeout_s
        digest, received = hashlib.sha256(), 0
        try:
            with urllib.request.urlopen(announcement.url, timeout=_SOCKET_TIMEOUT_S) as response, \
                    dest.open("wb") as out:
                declared = response.headers.get("Content-Length")
                if declared and declared.isdigit() and int(declared) > limit:
                    raise OtaError(f"{announcement.tag}: {announcement.url} is {int(declared)} bytes, over the "
                                   f"limit of {limit}")
                while block := response.read(_CHUNK):
                    received += len(block)
                    if received > limit:
                        raise OtaError(f"{announcement.tag}: download from {announcement.url} passed {limit} bytes "
                                       "(ota.max_mb or the announced size); aborted")
                    if time.monotonic() > deadline:
                        raise DownloadError(f"{announcement.tag}: download from {announcement.url} took longer than "
                                       f"{self.timeout_s:.0f} s (ota.download_timeout_s); aborted")
                    if self.cancelled.is_set():
                        raise OtaError(f"{announcement.tag}: download cancelled (shutting down)")
                    digest.update(block)
                    out.write(block)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise DownloadError(f"{announcement.tag}: download from {announcement.url} failed ({exc})") from None
        if announcement.size and received != announcement.size:
            raise OtaError(f"{announcement.tag}: downloaded {received} bytes, the announcement says "
                           f"{announcement.size}")
        return digest.hexdigest()

    def unpack(self, archive: Path, target: Path) -> None:
        """Extract regular files only, each inside `target`; links, devices, absolute or `..` paths are refused."""
        target.mkdir(parents=True)
        try:
            with tarfile.open(archive, "r:") as tar:
                members = tar.getmembers()
                seen: set[str] = set()
                for member in members:
                    path = PurePosixPath(member.name)
                    if not member.isfile() or path.is_absolute() or ".." in path.parts or member.name in seen:
                        raise OtaError(f"archive member {member.name!r}: only regular files with relative paths "
                                       "inside the bundle are allowed")
                    seen.add(member.name)
                tar.extractall(target, members=members, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise OtaError(f"archive {archive.name}: not a readable tar archive ({exc})") from None

    def _check(self, directory: Path, announcement: Announcement) -> VerifiedBundle:
        verify_manifest_signature(directory, announcement.signature, self.public_key)
        try:
            manifest = Manifest.load(directory)
            if (manifest.name, manifest.version) != (announcement.name, announcement.version):
                raise OtaError(f"{announcement.tag}: the signed manifest is {manifest.name}@{manifest.version}, "
                               "not what was announced")
            listed = {MANIFEST_NAME, SIGNATURE_NAME, *(c.file for c in manifest.components.values())}
            extra = sorted(str(p.relative_to(directory)) for p in directory.rglob("*")
                           if p.is_file() and str(p.relative_to(directory)) not in listed)
            if extra:
                raise OtaError(f"{announcement.tag}: the archive holds files its manifest does not list: "
                               f"{', '.join(extra[:5])}")
            return verify_bundle(directory)
        except BundleError as exc:
            raise OtaError(f"{announcement.tag}: {exc}") from None

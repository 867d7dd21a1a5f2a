"""Signed test bundles and their archives (good and deliberately bad) for the OTA tests."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import socket
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from edgeomni.bundle.manifest import MANIFEST_NAME
from edgeomni.ota.announcement import Announcement
from edgeomni.ota.signing import SIGNATURE_NAME, generate_keypair, load_private_key, sign_manifest


def make_keys(directory: Path) -> tuple[Path, str]:
    """A fresh key pair; returns (private key path, public key base64)."""
    private, _public, public_b64 = generate_keypair(directory)
    return private, public_b64


def versioned_copy(source: Path, target: Path, version: str, key: Path, sequence: int | None = None) -> Path:
    """A full copy of `source` with its manifest's version bumped (and its release `sequence` set), signed."""
    shutil.copytree(source, target, copy_function=shutil.copyfile)
    (target / SIGNATURE_NAME).unlink(missing_ok=True)
    manifest_path = target / MANIFEST_NAME
    raw = json.loads(manifest_path.read_text())
    raw["version"] = version
    if sequence is not None:
        raw["sequence"] = sequence
    manifest_path.write_text(json.dumps(raw, indent=2) + "\n")
    sign_manifest(target, load_private_key(key))
    return target


def pack(bundle: Path, archive: Path, changed: str | None = None, extra: dict[str, bytes] | None = None,
         grown: str | None = None, first: dict[str, bytes] | None = None, sparse: str | None = None) -> str:
    """Tar the bundle (manifest, signature, every listed file) like the publisher does; `changed` names a file
    whose bytes are altered (same size) after signing, `grown` one with bytes appended, `sparse` one stored as a
    GNU sparse member that unpacks to 1 TiB; `first` adds members right after the signature, `extra` at the
    end. Returns the archive's sha256."""
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    members = [MANIFEST_NAME, SIGNATURE_NAME, *sorted(c["file"] for c in manifest["components"].values())]
    with tarfile.open(archive, "w") as tar:
        for name in members:
            data = (bundle / name).read_bytes()
            if name == changed:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            if name == grown:
                data += b"\0" * 4096
            if name == sparse:
                _add_sparse(tar, name, data[:10], 1 << 40)
            else:
                _add(tar, name, data)
            for extra_name, extra_data in (first or {}).items() if name == SIGNATURE_NAME else ():
                _add(tar, extra_name, extra_data)
        for name, data in (extra or {}).items():
            _add(tar, name, data)
    return hashlib.sha256(archive.read_bytes()).hexdigest()


def _add_sparse(tar: tarfile.TarFile, name: str, data: bytes, real_size: int) -> None:
    """An old-GNU sparse member: `data` stored, placed at the end of a `real_size`-byte file of holes."""
    info = tarfile.TarInfo(name)
    info.size, info.type = len(data), tarfile.GNUTYPE_SPARSE
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    header[386:398] = tarfile.itn(real_size - len(data), 12, tarfile.GNU_FORMAT)  # the one data chunk's offset
    header[398:410] = tarfile.itn(len(data), 12, tarfile.GNU_FORMAT)
    header[482] = 0  # no extended sparse headers
    header[483:495] = tarfile.itn(real_size, 12, tarfile.GNU_FORMAT)
    header[148:156] = b" " * 8  # the checksum is computed with its own field as spaces
    header[148:156] = b"%06o\0 " % sum(header[:tarfile.BLOCKSIZE])
    tar.fileobj.write(bytes(header))
    tar.fileobj.write(data + b"\0" * (-len(data) % tarfile.BLOCKSIZE))
    tar.offset += len(header) + len(data) + (-len(data) % tarfile.BLOCKSIZE)


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


def junk_archive(archive: Path, bundle: Path, count: int) -> str:
    """`bundle`'s manifest and signature, then `count` empty members nobody listed. Returns its sha256."""
    with tarfile.open(archive, "w") as tar:
        for name in (MANIFEST_NAME, SIGNATURE_NAME):
            _add(tar, name, (bundle / name).read_bytes())
        for i in range(count):
            _add(tar, f"junk/{i:06d}", b"")
    return hashlib.sha256(archive.read_bytes()).hexdigest()


class TreeWatch:
    """Polls a directory tree from a thread while the block runs: the most files (and bytes, apparent size)
    it ever held, `ignore` excepted. Shows what an install wrote before it refused and cleaned up."""

    def __init__(self, root: Path, ignore: tuple[str, ...] = ("bundle.tar",)) -> None:
        self.root, self.ignore = root, ignore
        self.most_files = self.most_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="tree-watch", daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            files = total = 0
            for folder, _dirs, names in os.walk(self.root):
                for name in names:
                    if name in self.ignore:
                        continue
                    files += 1
                    with contextlib.suppress(OSError):  # removed between listing and stat
                        total += os.stat(os.path.join(folder, name)).st_size
            self.most_files, self.most_bytes = max(self.most_files, files), max(self.most_bytes, total)
            time.sleep(0.002)

    def __enter__(self) -> TreeWatch:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()


class RawHttpServer:
    """A loopback TCP server whose every connection is handed to `respond(conn)` in its own thread: for the
    servers a real one never is (a trickle, a redirect to another scheme). Closing it closes every connection."""

    def __init__(self, respond: Callable[[socket.socket], None]) -> None:
        self._respond = respond
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.closed = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="raw-http", daemon=True)

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)  # the request: these servers answer whatever was asked
            self._respond(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def __enter__(self) -> RawHttpServer:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.closed.set()
        self._listener.close()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)


def trickle(length: int, every_s: float) -> Callable[[socket.socket], None]:
    """A response that announces `length` bytes and sends one every `every_s` (until the server closes)."""

    def respond(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % length)
        for _ in range(length):
            time.sleep(every_s)
            conn.sendall(b"x")  # raises once the server closed the connection

    return respond


def redirect(location: str) -> Callable[[socket.socket], None]:
    def respond(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n" % location.encode())

    return respond

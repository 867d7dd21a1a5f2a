"""The publishing side of OTA: sign a bundle, pack it, serve it, announce it (retained, QoS 1).

`edgeomni trainer publish BUNDLE --key KEY --broker URL (--serve HOST:PORT | --url BASE)`.
"""

from __future__ import annotations

import argparse
import functools
import signal
import tarfile
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

from edgeomni.bundle import sha256_of, verify_bundle
from edgeomni.bundle.manifest import MANIFEST_NAME
from edgeomni.errors import OtaError
from edgeomni.ota.announcement import Announcement, bundle_topic
from edgeomni.ota.mqtt import new_client, parse_broker
from edgeomni.ota.signing import SIGNATURE_NAME, load_private_key, sign_manifest

ANNOUNCE_TIMEOUT_S = 15.0


def pack_bundle(bundle_dir: Path, out_dir: Path) -> tuple[Path, str]:
    """Write `<name>-<version>.tar` holding exactly the manifest, its signature and the files it lists.

    Plain tar, not gzip: the engine files are INT8 weights that barely compress, and a device unpacks
    faster without it. Returns the archive and its sha256.
    """
    bundle = verify_bundle(bundle_dir)  # never publish a bundle that would fail on the device anyway
    if not (bundle.path / SIGNATURE_NAME).is_file():
        raise OtaError(f"{bundle.path}: not signed (edgeomni bundle sign {bundle.path} --key KEY)")
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / f"{bundle.manifest.name}-{bundle.manifest.version}.tar"
    members = [MANIFEST_NAME, SIGNATURE_NAME, *sorted(c.file for c in bundle.manifest.components.values())]
    partial = archive.with_suffix(".tar.partial")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            info = tar.gettarinfo(str(bundle.path / member), arcname=member)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o644
            with (bundle.path / member).open("rb") as fh:
                tar.addfile(info, fh)
    partial.replace(archive)  # a half-written archive is never served
    return archive, sha256_of(archive)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass  # a device fetching the archive is not worth a line on the publisher's terminal


class ArchiveServer:
    """Serves one directory over HTTP from a background thread (port 0 picks a free port)."""

    def __init__(self, directory: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise OtaError(f"--serve {host}:{port}: cannot listen ({exc})") from None
        self._thread = threading.Thread(target=self._server.serve_forever, name="ota-http", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> ArchiveServer:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()


def announce(broker_url: str, fleet: str, announcement: Announcement, ca_file: str = "") -> str:
    """Publish the announcement retained with QoS 1 and wait for the broker's acknowledgement; return the topic.

    Retained, so a device that connects later (or reconnects) still gets the newest bundle at once.
    """
    address = parse_broker(broker_url, "--broker")
    topic = bundle_topic(fleet, announcement.name)
    client = new_client(address, "publish", ca_file)
    acked = threading.Event()
    outcome: dict[str, str] = {}

    def on_publish(_c: object, _u: object, _mid: int, reason: object, _p: object) -> None:
        if getattr(reason, "is_failure", False):
            outcome["error"] = str(reason)
        acked.set()

    def on_connect(_c: object, _u: object, _f: object, reason: object, _p: object) -> None:
        if getattr(reason, "is_failure", False):
            outcome["connect"] = str(reason)
            acked.set()  # nothing will be acknowledged: fail now, not at the timeout

    client.on_publish, client.on_connect = on_publish, on_connect
    try:
        client.connect(address.host, address.port, keepalive=30)
    except OSError as exc:
        raise OtaError(f"broker {address.redacted()}: cannot connect ({exc})") from None
    client.loop_start()
    try:
        info = client.publish(topic, announcement.to_json(), qos=1, retain=True)
        if not acked.wait(ANNOUNCE_TIMEOUT_S):
            raise OtaError(f"broker {address.redacted()}: no acknowledgement for {topic} within "
                           f"{ANNOUNCE_TIMEOUT_S:.0f} s (rc={info.rc}; bad credentials?)")
        if "connect" in outcome:
            raise OtaError(f"broker {address.redacted()} refused the connection: {outcome['connect']}")
        if "error" in outcome:
            raise OtaError(f"broker {address.redacted()} refused the announcement on {topic}: {outcome['error']} "
                           "(does this user's ACL allow writing the fleet's bundle topics?)")
    finally:
        client.disconnect()
        client.loop_stop()
    return topic


def publish_bundle(bundle_dir: Path, key_path: Path, broker_url: str, fleet: str, base_url: str, out_dir: Path,
                   ca_file: str = "", sequence: int | None = None) -> tuple[Announcement, Path]:
    """Sign (setting the release `sequence` when given), pack and announce; the archive must be reachable at
    `base_url/<archive name>`."""
    signature = sign_manifest(bundle_dir, load_private_key(key_path), sequence)
    archive, digest = pack_bundle(Path(bundle_dir), out_dir)
    bundle = verify_bundle(bundle_dir)
    announcement = Announcement(bundle.manifest.name, bundle.manifest.version,
                                f"{base_url.rstrip('/')}/{archive.name}", digest, signature, archive.stat().st_size)
    announce(broker_url, fleet, announcement, ca_file)
    return announcement, archive


def run_publish(args: argparse.Namespace) -> int:
    if not args.serve and not args.url:
        raise OtaError("publish: give --serve HOST:PORT (serve the archive from here) or --url BASE (you upload it)")
    with tempfile.TemporaryDirectory(prefix="edgeomni-publish-") as scratch:
        out_dir = Path(args.out) if args.out else Path(scratch)
        if not args.serve:
            announcement, archive = publish_bundle(args.bundle, args.key, args.broker, args.fleet, args.url, out_dir,
                                                   args.ca_file, args.sequence)
            print(f"announced {announcement.tag} on {bundle_topic(args.fleet, announcement.name)}; "
                  f"upload {archive} to {announcement.url}", flush=True)
            if not args.out:
                print("note: without --out the archive is deleted on exit", flush=True)
            return 0
        host, _, port = args.serve.rpartition(":")
        if not host or not port.isdigit():
            raise OtaError(f"--serve {args.serve!r}: expected HOST:PORT, e.g. 0.0.0.0:8765 (port 0 = any free port)")
        if host.strip("[]") in ("0.0.0.0", "::") and not args.url:
            raise OtaError(f"--serve {args.serve}: listens on every interface, but devices need the address they "
                           f"reach this machine at: add --url http://HOST:{port} (HOST: its name or LAN address)")
        with ArchiveServer(out_dir, host, int(port)) as server:
            announcement, _ = publish_bundle(args.bundle, args.key, args.broker, args.fleet,
                                             args.url or server.base_url, out_dir, args.ca_file, args.sequence)
            print(f"announced {announcement.tag} on {bundle_topic(args.fleet, announcement.name)}; "
                  f"serving {announcement.url} (Ctrl+C to stop)", flush=True)
            _wait_for_signal()
    return 0


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()

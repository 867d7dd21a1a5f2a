"""The device side of OTA: listen for bundle announcements, install what verifies, switch between utterances.

paho-mqtt runs its network loop in its own thread and hands each announcement to the asyncio loop;
installing (download, unpack, hashing) runs in a worker thread, so captions never wait on an update.
A refused bundle is reported (an `ota` event through the sinks and a log line) and the device keeps the
bundle it runs. A refused bundle is not retried when the broker re-delivers its announcement (on reconnect);
a failed download is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from edgeomni.bundle import VerifiedBundle
from edgeomni.bundle.manifest import Manifest
from edgeomni.errors import OtaError
from edgeomni.events import OtaEvent
from edgeomni.ota.announcement import Announcement, bundle_topic
from edgeomni.ota.config import OtaConfig
from edgeomni.ota.install import BundleInstaller, DownloadError, background_executor
from edgeomni.ota.mqtt import new_client, parse_broker
from edgeomni.ota.rollback import ReleaseFloor
from edgeomni.ota.signing import load_public_key
from edgeomni.paths import cache_root

log = logging.getLogger("edgeomni.ota")

Switch = Callable[[VerifiedBundle], Awaitable[None]]
Report = Callable[[OtaEvent], Awaitable[None]]


class BundleUpdater:
    """Follows `edgeomni/<fleet>/bundles/<name>`; each newer, verified bundle goes to `switch`."""

    def __init__(self, config: OtaConfig, running: VerifiedBundle, switch: Switch, report: Report) -> None:
        self.config, self.running = config, running
        self._switch, self._report = switch, report
        self.name = config.bundle or running.manifest.name
        self.topic = bundle_topic(config.fleet, self.name)
        cache_dir = Path(config.cache_dir).expanduser() if config.cache_dir else cache_root() / "bundles"
        self.installer = BundleInstaller(cache_dir, load_public_key(config.public_key),
                                         int(config.max_mb * 1e6), config.download_timeout_s)
        self.floor = ReleaseFloor(cache_dir)  # the newest bundle ever installed: a restart must not forget it
        self._address = parse_broker(config.broker, "ota.broker")
        self._latest: tuple[str, bytes] | None = None  # newest announcement not yet handled (older ones coalesce)
        self._arrived = asyncio.Event()
        self._refused: set[bytes] = set()
        self._client: Any = None
        self._install_pool = background_executor()
        self._task: asyncio.Task[None] | None = None

    @property
    def running_tag(self) -> str:
        return f"{self.running.manifest.name}@{self.running.manifest.version}"

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        client = new_client(self._address, "ota", self.config.ca_file)

        def on_connect(c: Any, _u: object, _flags: object, reason: Any, _p: object) -> None:
            if reason.is_failure:
                log.warning("broker %s refused the connection: %s", self._address.redacted(), reason)
                return
            c.subscribe(self.topic, qos=1)  # on every (re)connect: the retained announcement comes again

        def on_message(_c: object, _u: object, message: Any) -> None:
            loop.call_soon_threadsafe(self._offer, message.topic, bytes(message.payload))

        warned: list[bool] = []

        def on_connect_fail(_c: object, _u: object) -> None:
            if not warned:  # once: paho keeps retrying with backoff, and captions do not depend on it
                warned.append(True)
                log.warning("cannot reach broker %s; retrying in the background", self._address.redacted())

        client.on_connect, client.on_message, client.on_connect_fail = on_connect, on_message, on_connect_fail
        client.connect_async(self._address.host, self._address.port, keepalive=30)
        client.loop_start()  # paho's thread connects, and reconnects with backoff when the broker goes away
        self._client = client
        self._task = asyncio.create_task(self._run(), name="ota-updater")

    async def close(self) -> None:
        self.installer.cancelled.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
        self._install_pool.shutdown(wait=False, cancel_futures=True)  # a running install stops at its next chunk

    # -- announcements -----------------------------------------------------------------------------------
    def _offer(self, topic: str, payload: bytes) -> None:
        if not payload:
            return  # an empty retained message clears the topic: nothing announced
        self._latest = (topic, payload)
        self._arrived.set()

    async def _run(self) -> None:
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            if self._latest is None:
                continue
            (topic, payload), self._latest = self._latest, None
            if payload in self._refused:
                continue  # the broker re-delivers a retained message on reconnect; it was reported once
            try:
                await self.handle(topic, payload)
            except Exception as exc:  # anything unforeseen (a full disk, ...) refuses this bundle, never ends OTA
                if not isinstance(exc, DownloadError):  # a bad bundle stays bad; a failed download may work next time
                    self._refused.add(payload)
                await self._refuse(payload, str(exc) if isinstance(exc, OtaError) else f"{type(exc).__name__}: {exc}")

    async def handle(self, topic: str, payload: bytes) -> None:
        announcement = Announcement.from_json(payload, where=f"announcement on {topic}")
        if announcement.name != self.name:
            raise OtaError(f"announcement.name: {announcement.name!r} arrived on {topic}, which is for {self.name!r}")
        running = self.running.manifest.version
        if announcement.version == running:
            return  # the retained announcement of the bundle we already run
        if not self.config.allow_downgrade:
            self.floor.check_version(self.name, announcement.version, self.running.manifest)
        await self._report(OtaEvent(status="downloading", bundle=announcement.tag, running=self.running_tag,
                                    url=announcement.url))
        loop = asyncio.get_running_loop()
        bundle = await loop.run_in_executor(self._install_pool, self.installer.install, announcement,
                                            self._check_sequence)
        # Reported before the switch: a server hands the new engines to new sessions as soon as they load, so
        # /health can show the new tag while running streams are still moving; "verified" covers that span.
        await self._report(OtaEvent(status="verified", bundle=announcement.tag, running=self.running_tag,
                                    path=str(bundle.path)))
        try:
            await self._switch(bundle)
        except Exception as exc:  # a bundle that verifies but cannot load (bad engine file) is refused too
            raise OtaError(f"{announcement.tag}: verified, but its engines failed to load ({exc})") from exc
        previous, self.running = self.running_tag, bundle
        self.floor.record(bundle.manifest)
        log.info("switching %s -> %s (%s); streams change over between utterances", previous, announcement.tag,
                 bundle.path)
        await self._report(OtaEvent(status="installed", bundle=announcement.tag, previous=previous,
                                    path=str(bundle.path)))

    def _check_sequence(self, manifest: Manifest) -> None:
        """Run by the installer on the signed manifest, before anything is unpacked."""
        if not self.config.allow_downgrade:
            self.floor.check_sequence(manifest, self.running.manifest)

    async def _refuse(self, payload: bytes, reason: str) -> None:
        try:
            tag = Announcement.from_json(payload).tag
        except OtaError:
            tag = None
        log.warning("refused: %s; keeping %s", reason, self.running_tag)
        await self._report(OtaEvent(status="refused", bundle=tag, running=self.running_tag, reason=reason))


@contextlib.asynccontextmanager
async def bundle_updates(config: OtaConfig, running: VerifiedBundle, switch: Switch,
                         report: Report) -> AsyncIterator[BundleUpdater | None]:
    """`async with bundle_updates(...)`: an updater while the block runs, or None when OTA is off."""
    if not config.enabled:
        yield None
        return
    if not log.handlers and not logging.getLogger().handlers:  # the CLI configures no logging: still show our lines
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("edgeomni ota: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    updater = BundleUpdater(config, running, switch, report)
    updater.start()
    try:
        yield updater
    finally:
        await updater.close()


"""DeviceSync: what `edgeomni run` adds when an outbox or sync is configured (an outbox sink + a sync thread)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from edgeomni.config import RunConfig
from edgeomni.frames import AudioFrame, VideoFrame
from edgeomni.outbox.config import OutboxConfig
from edgeomni.outbox.sink import OutboxSink
from edgeomni.outbox.store import Outbox
from edgeomni.paths import cache_root
from edgeomni.sinks.base import Sink
from edgeomni.sync.worker import SyncWorker

log = logging.getLogger("edgeomni.sync")


def default_outbox_path() -> Path:
    return cache_root() / "outbox" / "outbox.sqlite"


def open_outbox(config: OutboxConfig, path: str | Path | None = None) -> Outbox:
    target = Path(path or config.path or default_outbox_path()).expanduser()
    return Outbox(target, max_bytes=int(config.max_mb * 2**20), max_age_s=config.max_age_h * 3600.0)


def add_sync_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument("--sync", metavar="URL", help="sync the outbox to an MQTT broker: mqtt[s]://user@host:port "
                     "(overrides [sync] broker; the password from [sync] password_file or $EDGEOMNI_MQTT_PASSWORD)")
    run.add_argument("--outbox", type=Path, metavar="PATH", help="outbox SQLite file (overrides [outbox] path)")
    run.add_argument("--device", help="device id in sync topics (default: [sync] device, else the host name)")
    run.add_argument("--fleet", help="fleet name in sync topics (default: [sync] fleet)")


class DeviceSync:
    """Owns the outbox, its sink and the sync thread for one `edgeomni run`."""

    def __init__(self, config: RunConfig) -> None:
        self.outbox = open_outbox(config.outbox)
        self.sink = OutboxSink(self.outbox, config.outbox)
        self.worker: SyncWorker | None = None
        if config.sync.broker:
            self.worker = SyncWorker(self.outbox, config.sync)
            self.worker.start()
        self.drain_timeout_s = config.sync.drain_timeout_s

    @classmethod
    def open(cls, config: RunConfig) -> DeviceSync | None:
        """None when neither sync nor an outbox path is configured (then nothing is recorded)."""
        if not (config.sync.broker or config.outbox.path):
            return None
        return cls(config)

    @property
    def sinks(self) -> list[Sink]:
        return [self.sink]

    def tap(self, frame: AudioFrame | VideoFrame) -> None:
        self.sink.tap(frame)

    def close(self) -> None:
        """After the sinks closed: give sync a bounded time to deliver what is left; the rest stays on disk."""
        if self.worker is not None:
            if not self.worker.drain(self.drain_timeout_s):
                log.warning("sync: %d record(s) not yet delivered stay in the outbox %s", self.outbox.count(),
                            self.outbox.path)
            self.worker.stop()
        self.outbox.close()

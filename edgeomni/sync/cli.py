"""`edgeomni sync`: drain an outbox to a broker as a standalone process (a service, or catch-up after a run)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from edgeomni.config import RunConfig
from edgeomni.credentials import MQTT_PASSWORD_ENV
from edgeomni.errors import ConfigError
from edgeomni.sync.device import open_outbox
from edgeomni.sync.worker import SyncWorker


def add_sync_parser(commands: argparse._SubParsersAction) -> None:
    sync = commands.add_parser("sync", help="deliver an outbox's records to an MQTT broker (QoS 1, delete on ack)")
    sync.add_argument("--outbox", type=Path, help="outbox SQLite file (default: [outbox] path, else the cache's)")
    sync.add_argument("--broker", help="mqtt[s]://user@host:port (default: [sync] broker; a password here shows in "
                      "`ps`: use --password-file)")
    sync.add_argument("--password-file", metavar="FILE", help="the broker password, first line of FILE (default: "
                      f"[sync] password_file, else ${MQTT_PASSWORD_ENV})")
    sync.add_argument("--fleet", help="fleet name in topics (default: [sync] fleet)")
    sync.add_argument("--device", help="device id in topics (default: [sync] device, else the host name)")
    sync.add_argument("--config", type=Path, help="TOML config with [outbox] and [sync] sections")
    sync.add_argument("--batch-size", type=int, help="records per message (default: [sync] batch_size)")
    sync.add_argument("--exit-when-empty", action="store_true", help="exit once the outbox is empty")
    sync.set_defaults(func=_cmd_sync)


def _cmd_sync(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = RunConfig.load(args.config).override(
        {f"sync.{option}": getattr(args, option)
         for option in ("broker", "fleet", "device", "batch_size", "password_file")},
        source="command line")
    if not config.sync.broker:
        raise ConfigError("edgeomni sync: no broker (give --broker URL or [sync] broker)")
    outbox = open_outbox(config.outbox, args.outbox)
    worker = SyncWorker(outbox, config.sync)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    worker.start()
    last_report = 0.0
    try:
        while not stop.wait(0.2):
            remaining = outbox.count()
            if time.monotonic() - last_report > 5.0:
                last_report = time.monotonic()
                state = "connected" if worker.connected else "standing by" if worker.standing_by else "offline"
                print(f"sync: {worker.stats.acked_records} delivered, {remaining} waiting, {state}", file=sys.stderr,
                      flush=True)
            # standing by: the process that holds the outbox delivered it
            if args.exit_when_empty and remaining == 0 and (worker.stats.connects or worker.standing_by):
                break
    finally:
        worker.stop()
        print(f"sync: done, {worker.stats.acked_records} delivered, {outbox.count()} left in {outbox.path}",
              file=sys.stderr, flush=True)
        outbox.close()
    return 0

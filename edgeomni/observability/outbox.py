"""The device outbox and its sync as Prometheus series, read at scrape time: backlog by kind, bytes, records
dropped by the retention policy, records the broker acknowledged, and whether sync is connected."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edgeomni.outbox.store import KINDS, Outbox, OutboxError
from edgeomni.sync.worker import SyncWorker


class OutboxCollector(Collector):
    def __init__(self, outbox: Outbox, worker: SyncWorker | None) -> None:
        self.outbox, self.worker = outbox, worker

    def collect(self) -> Iterable[Metric]:
        try:
            stats = self.outbox.stats()
        except (OutboxError, sqlite3.Error):  # closed at shutdown, or a disk error: no outbox series this scrape
            return
        backlog = GaugeMetricFamily("edgeomni_outbox_backlog_records", "Records waiting in the outbox, by kind",
                                    labels=["kind"])
        dropped = CounterMetricFamily("edgeomni_outbox_dropped_records", "Records the outbox's retention policy "
                                      "dropped (age or size bound), by kind; kept across restarts", labels=["kind"])
        for kind in KINDS:
            backlog.add_metric([kind], stats["pending"].get(kind, 0))
            dropped.add_metric([kind], stats["dropped"].get(kind, 0))
        yield backlog
        yield dropped
        yield GaugeMetricFamily("edgeomni_outbox_backlog_bytes", "Bytes waiting in the outbox",
                                value=stats["bytes"])
        if self.worker is not None:
            sync = self.worker.stats
            yield CounterMetricFamily("edgeomni_outbox_synced_records", "Records the broker acknowledged (then "
                                      "deleted from the outbox)", value=sync.acked_records)
            yield CounterMetricFamily("edgeomni_outbox_refused_records", "Records the broker refused",
                                      value=sync.refused_records)
            yield GaugeMetricFamily("edgeomni_sync_connected", "1 while sync holds an MQTT connection",
                                    value=1 if self.worker.connected else 0)


__all__ = ["OutboxCollector"]

"""A device's batches fit the trainer's message limit: `[sync] max_batch_kb` cannot exceed the trainer's default
`--max-payload-kb` (4096), and a batch is measured as the JSON the trainer inflates (each record's envelope
included), not as the sum of the records' data, so many small records never make an oversized message (which the
trainer rejects: acknowledged, and so lost)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sync_support import ingest_counters, start_trainer, stop, stored_ids, wait_for

from edgeomni.errors import ConfigError
from edgeomni.outbox import Outbox
from edgeomni.sync.config import SyncConfig
from edgeomni.sync.worker import SyncWorker

pytest.importorskip("paho.mqtt", reason="paho-mqtt (the sync extra) is not installed")
pytest.importorskip("pyarrow", reason="pyarrow (the trainer extra) is not installed")


def test_a_batch_limit_above_the_trainer_s_is_refused() -> None:
    SyncConfig(max_batch_kb=4096).validate()
    with pytest.raises(ConfigError, match=r"sync\.max_batch_kb: expected 1\.\.4096"):
        SyncConfig(max_batch_kb=65_536).validate()


def test_many_small_records_never_make_a_message_the_trainer_refuses(tmp_path: Path, mqtt_broker) -> None:
    broker = mqtt_broker(users={"dev-a": "pw-a"}, fleet="test")
    data = tmp_path / "data"
    trainer = start_trainer(broker.url_for("trainer"), data, tmp_path / "trainer.log", "edgeomni-trainer-1",
                            "--max-payload-kb", "64")
    outbox = Outbox(tmp_path / "outbox.sqlite")
    ids = outbox.append_many([("error", {"message": "e"}) for _ in range(2000)])  # 15 bytes of data, ~140 on the wire
    worker = SyncWorker(outbox, SyncConfig(broker=broker.url_for("dev-a"), fleet="test", device="dev-a",
                                           batch_size=2000, max_batch_kb=64))
    worker.start()
    try:
        assert worker.drain(30), worker.stats
        wait_for(lambda: len(stored_ids(data)) >= 2000 or "rejected:oversized" in ingest_counters(data), 30,
                 "the records, or a reject")
        assert "rejected:oversized" not in ingest_counters(data), ingest_counters(data)
        assert sorted(stored_ids(data)) == sorted(ids)
        assert worker.stats.published_messages > 4  # 2000 x ~140 bytes in messages of at most 64 KB
    finally:
        worker.stop()
        outbox.close()
        stop(trainer)

"""Sync clients that share a device id: two machines with one host name, or `edgeomni run --sync` beside an
`edgeomni sync` service on one outbox. Neither kicks the other off the broker, and one outbox is delivered by
one process at a time."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sync_support import start_trainer, stop, stored_ids, wait_for

from edgeomni.outbox import Outbox
from edgeomni.sync.config import SyncConfig
from edgeomni.sync.worker import SyncWorker

pytest.importorskip("paho.mqtt", reason="paho-mqtt (the sync extra) is not installed")
pytest.importorskip("pyarrow", reason="pyarrow (the trainer extra) is not installed")


def _outbox(path: Path, n: int, tag: str) -> tuple[Outbox, list[str]]:
    outbox = Outbox(path)
    return outbox, outbox.append_many([("error", {"message": f"{tag} {i}"}) for i in range(n)])


def test_two_machines_with_one_device_id_do_not_kick_each_other_off(tmp_path: Path, mqtt_broker) -> None:
    broker = mqtt_broker(users={"dev-a": "pw-a"}, fleet="test")
    data = tmp_path / "data"
    trainer = start_trainer(broker.url_for("trainer"), data, tmp_path / "trainer.log")
    config = SyncConfig(broker=broker.url_for("dev-a"), fleet="test", device="dev-a", batch_size=5)
    (first, first_ids), (second, second_ids) = _outbox(tmp_path / "a.sqlite", 40, "a"), \
        _outbox(tmp_path / "b.sqlite", 40, "b")
    workers = [SyncWorker(first, config), SyncWorker(second, config)]
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            assert worker.drain(20), worker.stats
        time.sleep(2.0)  # long enough for a broker to hand one session to the other client many times over
        assert [w.stats.disconnects for w in workers] == [0, 0], [w.stats for w in workers]
        wait_for(lambda: len(stored_ids(data)) >= 80, 20, "both machines' records")
        assert sorted(stored_ids(data)) == sorted(first_ids + second_ids)
    finally:
        for worker in workers:
            worker.stop()
        first.close()
        second.close()
        stop(trainer)


def test_one_outbox_is_delivered_by_one_sync_at_a_time(tmp_path: Path, mqtt_broker) -> None:
    broker = mqtt_broker(users={"dev-a": "pw-a"}, fleet="test")
    trainer = start_trainer(broker.url_for("trainer"), tmp_path / "data", tmp_path / "trainer.log")
    config = SyncConfig(broker=broker.url_for("dev-a"), fleet="test", device="dev-a", batch_size=5)
    path = tmp_path / "outbox.sqlite"
    service_outbox, _ = _outbox(path, 10, "x")
    run_outbox = Outbox(path)  # the same file, opened by a second process (here: a second connection)
    service, run = SyncWorker(service_outbox, config), SyncWorker(run_outbox, config)
    service.start()
    try:
        wait_for(lambda: service.stats.connects == 1, 10, "the first sync to connect")
        run.start()
        wait_for(lambda: run.standing_by, 10, "the second sync to see the outbox is taken")
        time.sleep(1.0)
        assert run.stats.connects == 0 and run.stats.published_messages == 0
        service.stop()
        run_outbox.append("error", {"message": "after the service stopped"})
        wait_for(lambda: run.stats.connects == 1, 15, "the second sync to take over")
        assert run.drain(20), run.stats
    finally:
        service.stop()
        run.stop()
        service_outbox.close()
        run_outbox.close()
        stop(trainer)

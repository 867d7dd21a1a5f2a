"""The data loop under faults and abuse, against a real Mosquitto with real `edgeomni sync`/`trainer` processes:
- broker stopped and restarted, sync SIGKILLed and restarted, trainer SIGKILLed and restarted mid-sync:
  the dataset still holds every record exactly once;
- a device using its own credentials on another device's topics is dropped by the broker's ACL;
- malformed, oversized, badly compressed and schema-violating payloads are rejected and counted, and the
  trainer keeps ingesting;
- messages whose records cannot be stored are rejected, counted and acknowledged: behind more of them than the
  broker's in-flight window, a good record is still stored, by one trainer or two;
- a message that meets an I/O error stays unacknowledged and is stored once the error passes (the trainer
  reconnects so that the broker delivers it again).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from mqtt_broker import Broker
from sync_support import fill_outbox, ingest_counters, outbox_count, spawn, start_trainer, stop, stored_ids, wait_for
from unstorable import unstorable

from edgeomni.sync.codec import encode_batch

pytest.importorskip("paho.mqtt", reason="paho-mqtt (the sync/trainer extra) is not installed")
pytest.importorskip("pyarrow", reason="pyarrow (the trainer extra) is not installed")

RECORDS = 12_000
BATCH = 10  # small batches: many messages, so every fault lands while records are in flight


def _sync(outbox: Path, url: str, log: Path) -> subprocess.Popen[bytes]:
    # The retry delay capped at 2 s (default 60): while no trainer is subscribed (shared mode, after a restart) each
    # of the 16 in-flight batches comes back unrouted and doubles it, so with the default one retry can take a whole
    # minute of the waits below, twice in a row on a slow machine. What is tested is exactly-once, not the delay.
    config = log.with_name("sync.toml")
    config.write_text("[sync]\nbackoff_max_s = 2.0\n")
    return spawn(["sync", "--config", str(config), "--outbox", str(outbox), "--broker", url, "--fleet", "test",
                  "--device", "dev-a", "--batch-size", str(BATCH), "--exit-when-empty"], log)


def _accepted(data: Path) -> int:
    return ingest_counters(data).get("accepted", 0)


@pytest.mark.slow
@pytest.mark.parametrize("subscription", ["exclusive", "shared"])
def test_exactly_once_through_sync_broker_and_trainer_restarts(tmp_path: Path, mqtt_broker, subscription: str) -> None:
    """All three faults in both subscription modes. Mosquitto 2.0 does not restore shared subscriptions from
    persistence, so after its restart the broker answers "No matching subscribers" until the trainer has
    re-subscribed: the device keeps those records and sends them again (they must not be lost)."""
    broker = mqtt_broker(users={"dev-a": "pw-a"}, fleet="test")
    outbox, data = tmp_path / "outbox.sqlite", tmp_path / "data"
    expected = fill_outbox(outbox, RECORDS)
    mode = ("--exclusive",) if subscription == "exclusive" else ()
    trainer = start_trainer(broker.url_for("trainer"), data, tmp_path / "trainer.log", "edgeomni-trainer-1", *mode)
    sync = _sync(outbox, broker.url_for("dev-a"), tmp_path / "sync.log")
    faults: list[str] = []
    try:
        # 1. the sync process dies without any chance to clean up, mid-sync
        wait_for(lambda: outbox_count(outbox) < RECORDS * 0.85, 60, "sync to start delivering")
        sync.send_signal(signal.SIGKILL)
        sync.wait()
        faults.append(f"sync SIGKILL at {outbox_count(outbox)} waiting")
        sync = _sync(outbox, broker.url_for("dev-a"), tmp_path / "sync.log")

        # 2. the broker goes away for a while and comes back (same port, same persistence)
        wait_for(lambda: outbox_count(outbox) < RECORDS * 0.65, 60, "the restarted sync to deliver")
        broker.stop()
        faults.append(f"broker stopped at {outbox_count(outbox)} waiting")
        time.sleep(2.0)
        assert sync.poll() is None, "sync gave up while the broker was down"
        broker.start_again()

        # 3. the trainer is killed mid-ingest and restarted (its session and unacked messages wait at the broker)
        wait_for(lambda: _accepted(data) > RECORDS * 0.4, 90, "the trainer to ingest")
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()
        faults.append(f"trainer SIGKILL at {_accepted(data)} stored, {outbox_count(outbox)} waiting")
        trainer = start_trainer(broker.url_for("trainer"), data, tmp_path / "trainer.log", "edgeomni-trainer-1",
                                *mode)

        assert sync.wait(120) == 0, (tmp_path / "sync.log").read_text()[-3000:]
        assert outbox_count(outbox) == 0
        wait_for(lambda: _accepted(data) >= RECORDS, 120, f"all {RECORDS} records in the dataset ({faults})",
                 interval=0.5)
        time.sleep(1.0)  # anything redelivered late must be dropped as a duplicate, not stored
        ids = stored_ids(data)
        assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} duplicates stored after {faults}"
        assert set(ids) == set(expected), f"lost {len(set(expected) - set(ids))} records after {faults}"
    finally:
        stop(sync, signal.SIGKILL)
        stop(trainer)


def _publisher(broker: Broker, user: str) -> Any:
    """A connected MQTT v5 client; `client.acks` maps mid -> the broker's PUBACK reason code."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"raw-{user}-{time.monotonic_ns()}",
                         protocol=mqtt.MQTTv5)
    client.acks = {}
    client.on_publish = lambda c, u, mid, reason, props: client.acks.__setitem__(mid, reason)
    client.username_pw_set(user, broker.users[user])
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def _record(device: str, kind: str = "error", **data: object) -> dict:
    return {"id": f"rec-{device}-{time.monotonic_ns()}", "kind": kind, "fleet": "test", "device": device,
            "ts": time.time(), "data": {"message": "disk full", **data}}


def test_device_cannot_publish_on_another_devices_topics(tmp_path: Path, mqtt_broker) -> None:
    broker = mqtt_broker(users={"dev-a": "pw-a", "dev-b": "pw-b"}, fleet="test")
    data = tmp_path / "data"
    trainer = start_trainer(broker.url_for("trainer"), data, tmp_path / "trainer.log")
    client = _publisher(broker, "dev-b")
    try:
        forged = _record("dev-a")  # dev-b pretending to be dev-a, on dev-a's topic
        info = client.publish("edgeomni/test/dev-a/error", encode_batch([forged]), qos=1)
        info.wait_for_publish(5)
        wait_for(lambda: info.mid in client.acks, 5, "the broker's PUBACK")
        assert client.acks[info.mid].is_failure and "authorized" in str(client.acks[info.mid]).lower()
        own = _record("dev-b")  # the control: dev-b on its own topic gets through
        client.publish("edgeomni/test/dev-b/error", encode_batch([own]), qos=1).wait_for_publish(5)
        wait_for(lambda: own["id"] in stored_ids(data), 30, "dev-b's own record")
        time.sleep(0.5)
        assert forged["id"] not in stored_ids(data)
        assert not list((data / "dataset").glob("*/device=dev-a")), "a partition for dev-a exists"
    finally:
        client.loop_stop()
        client.disconnect()
        stop(trainer)


def test_bad_payloads_are_rejected_counted_and_ingest_goes_on(tmp_path: Path, mqtt_broker) -> None:
    broker = mqtt_broker(users={"dev-a": "pw-a"}, fleet="test")
    data = tmp_path / "data"
    trainer = start_trainer(broker.url_for("trainer"), data, tmp_path / "trainer.log", "edgeomni-trainer-1",
                            "--max-payload-kb", "64")
    client = _publisher(broker, "dev-a")
    bad = {
        "malformed_json": zlib.compress(b'{"v": 1, "records": [{"id": '),
        "bad_compression": b"\x78\x9c this is not deflate data",
        "oversized": encode_batch([_record("dev-a", message="x" * 200_000)], "none"),  # 200 kB plain JSON
        "zip_bomb": zlib.compress(b'{"v":1,"records":[{"pad":"' + b"0" * 5_000_000 + b'"}]}'),
        "bad_format": zlib.compress(json.dumps({"records": "nope"}).encode()),
    }
    schema_violations = [
        {**_record("dev-a"), "id": None},  # id must be a string
        {k: v for k, v in _record("dev-a").items() if k != "ts"},  # missing ts
        _record("dev-b"),  # claims another device than its topic
        {**_record("dev-a"), "kind": "caption"},  # kind differs from the topic's
        {**_record("dev-a"), "data": {"msg": "no message field"}},  # error record without data.message
        {**_record("dev-a"), "ts": time.time() + 10 * 86400},  # from the future
    ]
    try:
        for payload in bad.values():
            client.publish("edgeomni/test/dev-a/error", payload, qos=1).wait_for_publish(5)
        good = _record("dev-a")
        client.publish("edgeomni/test/dev-a/error", encode_batch([*schema_violations, good]), qos=1).wait_for_publish(5)
        wait_for(lambda: good["id"] in stored_ids(data), 30, "the valid record after the bad ones")
        counters = ingest_counters(data)
        assert counters["rejected:malformed_json"] == 1
        assert counters["rejected:bad_compression"] == 1
        assert counters["rejected:oversized"] == 2  # on the wire, and inflating past the limit
        assert counters["rejected:bad_format"] == 1
        assert counters["rejected:schema"] == len(schema_violations)
        assert counters["accepted"] == 1 and stored_ids(data) == [good["id"]]
        assert trainer.poll() is None, "the trainer died on bad input"
        reasons = [json.loads(line) for line in (data / "rejected.jsonl").read_text().splitlines()]
        assert any("missing field 'ts'" in r["detail"] for r in reasons)
        assert any("'device' is 'dev-b' but the topic says 'dev-a'" in r["detail"] for r in reasons)
        # still ingesting after all that
        later = _record("dev-a")
        client.publish("edgeomni/test/dev-a/error", encode_batch([later]), qos=1).wait_for_publish(5)
        wait_for(lambda: later["id"] in stored_ids(data), 30, "a record sent after the bad ones")
    finally:
        client.loop_stop()
        client.disconnect()
        stop(trainer)


def test_sync_keeps_records_the_broker_refuses(tmp_path: Path, mqtt_broker) -> None:
    """A device configured with another device's id (its own credentials): the ACL refuses every batch, and
    the records stay in the outbox instead of being deleted on a PUBACK."""
    from edgeomni.outbox import Outbox
    from edgeomni.sync.config import SyncConfig
    from edgeomni.sync.worker import SyncWorker

    broker = mqtt_broker(users={"dev-a": "pw-a", "dev-b": "pw-b"}, fleet="test")
    outbox = Outbox(tmp_path / "outbox.sqlite")
    outbox.append_many([("error", {"message": f"e{i}"}) for i in range(30)])
    worker = SyncWorker(outbox, SyncConfig(broker=broker.url_for("dev-b"), fleet="test", device="dev-a",
                                           batch_size=10))
    worker.start()
    try:
        wait_for(lambda: worker.stats.refused_records >= 30, 10, "the broker to refuse the batches")
        assert "not authorized" in worker.stats.last_error.lower()
        assert worker.stats.acked_records == 0 and outbox.count() == 30
    finally:
        worker.stop()
        outbox.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed (makes the test certificates)")
def test_sync_over_tls_verifies_the_broker(tmp_path: Path, mqtt_broker) -> None:
    from edgeomni.outbox import Outbox
    from edgeomni.sync.config import SyncConfig
    from edgeomni.sync.worker import SyncWorker

    broker = mqtt_broker(users={"dev-a": "pw-a"}, fleet="test", tls=True)
    assert broker.url_for("dev-a").startswith("mqtts://")
    data = tmp_path / "data"
    trainer = start_trainer(broker.url_for("trainer"), data, tmp_path / "trainer.log", "edgeomni-trainer-1",
                            "--ca-file", str(broker.ca_file))
    outbox = Outbox(tmp_path / "outbox.sqlite")
    ids = outbox.append_many([("error", {"message": f"e{i}"}) for i in range(25)])
    untrusting = SyncWorker(outbox, SyncConfig(broker=broker.url_for("dev-a"), fleet="test", device="dev-a"))
    untrusting.start()  # the system CAs do not know our private CA: the TLS handshake must fail
    try:
        time.sleep(2.0)
        assert untrusting.stats.connects == 0 and outbox.count() == 25
    finally:
        untrusting.stop()
    worker = SyncWorker(outbox, SyncConfig(broker=broker.url_for("dev-a"), fleet="test", device="dev-a",
                                           ca_file=str(broker.ca_file), batch_size=10))
    worker.start()
    try:
        assert worker.drain(20), f"not delivered over TLS: {worker.stats}"
        wait_for(lambda: len(stored_ids(data)) >= 25, 30, "the records over TLS")
        assert sorted(stored_ids(data)) == sorted(ids)
    finally:
        worker.stop()
        outbox.close()
        stop(trainer)


def _inflight_window(broker: Broker, messages: int) -> None:
    """Mosquitto's own default (20): how many unacknowledged messages a trainer can hold before delivery stops."""
    broker.stop()
    conf = broker.conf_path.read_text()
    broker.conf_path.write_text(conf.replace("max_inflight_messages 100", f"max_inflight_messages {messages}"))
    broker.start_again()


def _rejected(data: Path) -> int:
    return sum(n for name, n in ingest_counters(data).items() if name.startswith("rejected:"))


@pytest.mark.parametrize("trainers", [1, 2])
def test_unstorable_messages_are_counted_and_a_good_one_behind_them_is_stored(tmp_path: Path, mqtt_broker,
                                                                             trainers: int) -> None:
    broker = mqtt_broker(users={"dev-a": "pw-a"}, fleet="test")
    _inflight_window(broker, 20)
    data = [tmp_path / f"data-{n}" for n in range(trainers)]
    procs = [start_trainer(broker.url_for("trainer"), data[n], tmp_path / f"trainer-{n}.log", f"edgeomni-trainer-{n}")
             for n in range(trainers)]
    client = _publisher(broker, "dev-a")
    bad = [payload for name, payload in unstorable().items() if name != "nesting deeper than a record needs"]
    try:
        for n in range(25):  # more than the in-flight window
            client.publish("edgeomni/test/dev-a/caption", bad[n % len(bad)], qos=1).wait_for_publish(5)
        good = _record("dev-a")
        client.publish("edgeomni/test/dev-a/error", encode_batch([good]), qos=1).wait_for_publish(5)
        wait_for(lambda: any(good["id"] in stored_ids(d) for d in data), 30, "the good record behind 25 bad ones")
        wait_for(lambda: sum(map(_rejected, data)) == 25, 30, "25 rejects counted")
        assert all(p.poll() is None for p in procs), "a trainer died on bad input"
        for n, proc in enumerate(procs):
            stop(proc)
            procs[n] = start_trainer(broker.url_for("trainer"), data[n], tmp_path / f"trainer-{n}.log",
                                     f"edgeomni-trainer-{n}")
        time.sleep(2.0)  # acknowledged: a restarted trainer is not handed the same messages again
        assert sum(map(_rejected, data)) == 25 and sum(map(_accepted, data)) == 1
    finally:
        client.loop_stop()
        client.disconnect()
        for proc in procs:
            stop(proc)


def test_a_message_that_meets_an_io_error_is_stored_once_the_error_passes(tmp_path: Path, mqtt_broker) -> None:
    import errno
    import threading

    from edgeomni.trainer.ingest import IngestConfig, Ingestor

    broker = mqtt_broker(users={"dev-a": "pw-a"}, fleet="test")
    ingestor = Ingestor(IngestConfig(broker.url_for("trainer"), tmp_path / "data", shared=False))
    store, failures = ingestor.dataset.store, []

    def disk_full_twice(*args: Any, **kwargs: Any) -> int:
        if len(failures) < 2:
            failures.append(time.monotonic())
            raise OSError(errno.ENOSPC, "No space left on device")
        return store(*args, **kwargs)

    ingestor.dataset.store = disk_full_twice  # type: ignore[method-assign]
    stop_event = threading.Event()
    thread = threading.Thread(target=ingestor.run, args=(stop_event,), daemon=True)
    thread.start()
    client = _publisher(broker, "dev-a")
    try:
        assert ingestor.connected.wait(10)
        record = _record("dev-a")
        client.publish("edgeomni/test/dev-a/error", encode_batch([record]), qos=1).wait_for_publish(5)
        wait_for(lambda: len(failures) == 2, 45, "the delivery after a reconnect to meet the error again")
        wait_for(lambda: ingestor.dataset.counters().get("accepted") == 1, 20, "the record once the disk has room")
        assert stored_ids(tmp_path / "data") == [record["id"]]
    finally:
        client.loop_stop()
        client.disconnect()
        stop_event.set()
        thread.join(10)

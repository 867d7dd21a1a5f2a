"""The trainer's ingest loop: shared MQTT subscription -> validate -> dedup -> Parquet, acked after commit.

Several trainer processes with different client ids split the load on `$share/trainers/...`. Each runs a
persistent MQTT v5 session with manual acks: a message is acknowledged only after its records are
committed (or it was rejected), so a trainer killed mid-write gets the message again and drops what it
already stored by id.

Whatever a device sends, its message ends stored, counted as duplicate or rejected, and acknowledged: a message
left unacknowledged holds one of the broker's few in-flight slots for this trainer, and enough of them stop
ingest for the whole fleet. Only an I/O error (a full disk, a failing index) leaves a message unacknowledged; the
broker redelivers unacknowledged messages only on a new connection, so the trainer then reconnects, with a
backoff while the error lasts.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeomni.sync.codec import TOPIC_ROOT, TRAINER_MAX_KB, PayloadError, decode_batch
from edgeomni.sync.config import BrokerAddress
from edgeomni.trainer.dataset import Dataset, Reject
from edgeomni.trainer.schema import SchemaError, validate_record

log = logging.getLogger("edgeomni.trainer")
RECORD_TOPICS = f"{TOPIC_ROOT}/+/+/#"
SHARED_TOPIC = f"$share/trainers/{RECORD_TOPICS}"
SESSION_EXPIRY_S = 7 * 86400
IO_ERRORS = (OSError, sqlite3.OperationalError)  # worth a redelivery: the same message may store once they pass
RECONNECT_BACKOFF_S = (1.0, 60.0)  # after an I/O error: first wait, doubling up to the second while errors last


@dataclass
class IngestConfig:
    broker: str
    data: Path
    client_id: str = "edgeomni-trainer-1"
    max_payload_kb: int = TRAINER_MAX_KB  # devices' [sync] max_batch_kb stays under this default
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    # Shared (several trainers split the load) or exclusive (one trainer). Mosquitto 2.0 does not restore
    # shared subscriptions from its persistence file: after a broker restart, records published before the
    # trainers re-subscribe are acknowledged and dropped. An exclusive subscription survives (see
    # runtimes/server/README.md); use it with a single trainer on such brokers.
    shared: bool = True
    compact_every_h: float = 6.0  # merge past days' partitions into one file each this often (0 = never)
    password_file: str = ""  # the broker password when the URL names only the user (else $EDGEOMNI_MQTT_PASSWORD)


class Ingestor:
    def __init__(self, config: IngestConfig) -> None:
        self.config = config
        self.address = BrokerAddress.parse(config.broker, "trainer --broker").with_password(
            config.password_file, "trainer --password-file")
        self.dataset = Dataset(config.data)
        self.max_bytes = config.max_payload_kb * 1024
        self.messages = 0
        self.connected = threading.Event()
        self._disconnected = threading.Event()  # set by the network thread once a disconnect has gone through
        self._session_present = False
        self._reconnect_at: float | None = None  # set when an I/O error left a message unacknowledged
        self._backoff_s = RECONNECT_BACKOFF_S[0]
        self._client = self._make_client()

    def handle(self, topic: str, payload: bytes) -> None:
        """One MQTT message: everything in it is stored, counted as duplicate, or rejected with a reason, in one
        transaction. Raises only on I/O errors."""
        self.messages += 1
        parts = topic.split("/")
        if len(parts) != 4 or parts[0] != TOPIC_ROOT:
            self.dataset.store(topic, "", [], [("bad_topic", f"expected {TOPIC_ROOT}/<fleet>/<device>/<kind>")])
            return
        _, fleet, device, kind = parts
        try:
            raw_records = decode_batch(payload, self.max_bytes)
        except PayloadError as exc:
            log.warning("trainer: rejected message on %s: %s", topic, exc)
            self.dataset.store(topic, device, [], [(exc.reason, str(exc))])
            return
        valid: dict[str, dict[str, Any]] = {}
        rejects: list[Reject] = []
        checked_count = 0
        for index, record in enumerate(raw_records):
            try:
                checked = validate_record(record, fleet, device, kind)
            except SchemaError as exc:
                rejects.append(("schema", f"record {index}: {exc}"))
                continue
            checked_count += 1
            valid.setdefault(checked["id"], checked)
        if rejects:
            log.warning("trainer: rejected %d of %d records on %s (first: %s)", len(rejects), len(raw_records), topic,
                        rejects[0][1][:200])
        new = self.dataset.new_ids(list(valid))
        # seen before (a redelivery or a resend), or twice in this batch
        self.dataset.store(topic, device, [r for i, r in valid.items() if i in new], rejects, checked_count - len(new))

    # -- MQTT ------------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        client = self._client
        self._connect()
        try:
            while not stop.wait(0.2):
                if self.reconnect_due():
                    log.warning("trainer: reconnecting so that the broker delivers the unacknowledged message(s) "
                                "again")
                    self._reconnect_at = None
                    self._disconnected.clear()
                    client.disconnect()
                    # Only once the broker has our DISCONNECT: stopping the network thread earlier can leave the old
                    # connection half open, and the redelivery then waits for the broker to notice it.
                    self._disconnected.wait(10)
                    client.loop_stop()
                    self._connect()
        finally:
            client.disconnect()
            client.loop_stop()
            self.dataset.close()

    def reconnect_due(self, now: float | None = None) -> bool:
        """True once a message was left unacknowledged and its backoff has passed."""
        at = self._reconnect_at
        return at is not None and (time.monotonic() if now is None else now) >= at

    def _connect(self) -> None:
        self._client.connect_async(self.address.host, self.address.port, keepalive=30, clean_start=False,
                                   properties=self._connect_properties())
        self._client.loop_start()

    def _connect_properties(self) -> Any:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = SESSION_EXPIRY_S  # the broker keeps our queue while we restart
        return properties

    def _make_client(self) -> Any:
        import paho.mqtt.client as mqtt

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.config.client_id,
                             protocol=mqtt.MQTTv5, manual_ack=True)
        if self.address.username:
            client.username_pw_set(self.address.username, self.address.password)
        if self.address.tls or self.config.ca_file:
            client.tls_set(ca_certs=self.config.ca_file or None, certfile=self.config.cert_file or None,
                           keyfile=self.config.key_file or None)
        client.reconnect_delay_set(min_delay=0.5, max_delay=30)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.error("trainer: broker %s refused the connection: %s", self.address.redacted(), reason_code)
            return
        topic = SHARED_TOPIC if self.config.shared else RECORD_TOPICS
        client.subscribe(topic, qos=1)
        self._session_present = flags.session_present

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        # Ready only once the broker has granted the subscription: a record published before then has no subscriber
        # to be queued for (a first start without a stored session).
        if all(not code.is_failure for code in reason_codes):
            topic = SHARED_TOPIC if self.config.shared else RECORD_TOPICS
            log.info("trainer: connected to %s as %s, subscribed to %s (session present: %s)",
                     self.address.redacted(), self.config.client_id, topic, self._session_present)
            self.connected.set()
        else:
            log.error("trainer: broker %s refused the subscription: %s", self.address.redacted(), reason_codes)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self.connected.clear()
        self._disconnected.set()
        log.warning("trainer: disconnected (%s); reconnecting", reason_code)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        topic = message.topic
        if topic.split("/")[2:3] == ["bundles"]:  # bundle announcements share the tree; they are not records
            client.ack(message.mid, message.qos)
            return
        try:
            self.handle(topic, message.payload)
        except IO_ERRORS as exc:  # a full disk: unacked, and redelivered after a reconnect
            if self._reconnect_at is None:
                self._reconnect_at = time.monotonic() + self._backoff_s
                self._backoff_s = min(RECONNECT_BACKOFF_S[1], self._backoff_s * 2)
            log.error("trainer: cannot store the message on %s (%s: %s); it stays unacknowledged and is delivered "
                      "again after a reconnect", topic, type(exc).__name__, exc)
            return
        except Exception as exc:  # a bug: kept unacked it would be redelivered, fail again and hold a slot for ever
            log.exception("trainer: failed to handle the message on %s; counted as rejected", topic)
            try:
                self.dataset.store(topic, "", [], [("internal_error", f"{type(exc).__name__}: {exc}")])
            except IO_ERRORS:
                return
        self._backoff_s = RECONNECT_BACKOFF_S[0]
        client.ack(message.mid, message.qos)  # only after the records are committed


def serve(config: IngestConfig, stop: threading.Event, report_every_s: float = 10.0) -> None:
    ingestor = Ingestor(config)
    thread = threading.Thread(target=ingestor.run, args=(stop,), name="edgeomni-trainer", daemon=True)
    thread.start()
    last = time.monotonic()
    compacted = time.monotonic() - 0.9 * config.compact_every_h * 3600  # the first pass soon after start
    while not stop.wait(0.5):
        if time.monotonic() - last > report_every_s:
            last = time.monotonic()
            log.info("trainer: %d messages, counters %s", ingestor.messages, ingestor.dataset.counters())
        if config.compact_every_h and time.monotonic() - compacted > config.compact_every_h * 3600:
            compacted = time.monotonic()
            _compact_past_days(ingestor.dataset)
    thread.join(10)


def _compact_past_days(dataset: Dataset) -> None:
    """Today's partitions are still growing; earlier ones are merged. A failure is logged, never fatal."""
    today = time.strftime("%Y-%m-%d", time.gmtime())
    try:
        done = dataset.compact(before=today)
    except Exception:
        log.exception("trainer: compaction failed; ingest goes on, it is tried again next time")
        return
    if done["partitions"]:
        log.info("trainer: compacted %d partitions (%d files, %d records)", done["partitions"],
                 done["files_merged"], done["records"])

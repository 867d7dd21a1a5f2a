"""SyncWorker: drains the outbox to an MQTT broker in its own thread, so it can never block captioning.

Delivery contract: QoS 1 on an MQTT v5 session that lasts through reconnects (clean on the first connect, kept
for `SESSION_EXPIRY_S` after); the client id is unique to the process, so two clients with one device id (two
machines with one host name) never take each other's session and kick each other off. One outbox is delivered by
one process at a time: the worker holds a lock beside it (`<outbox>.sync-lock`), and a second worker on the same
outbox (`edgeomni run --sync` beside an `edgeomni sync` service) stands by until the lock is free. A record is
deleted from the outbox only after the broker's successful PUBACK for the message
that carried it. A PUBACK with a failure reason (e.g. "Not authorized": the ACL refuses this device's
credentials on that topic) keeps the records, logs the reason and retries after `backoff_max_s`. A PUBACK
"No matching subscribers" (MQTT v5 reason 16: no trainer is subscribed, e.g. right after a broker restart,
which does not restore shared subscriptions in Mosquitto 2.0) means the broker dropped the message: the
records are kept and sent again, with a backoff doubling up to `backoff_max_s`, until a trainer listens. Anything not
acknowledged is sent again (by paho on reconnect, or by us after `ack_timeout_s`, or by the next process
after a crash), so delivery is at-least-once and the trainer's id index makes it exactly-once in the
dataset. Offline, records wait in the outbox (bounded by its retention policy); paho reconnects with
exponential backoff between `backoff_min_s` and `backoff_max_s`, and the worker catches up.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeomni.errors import ConfigError
from edgeomni.outbox.store import Outbox, OutboxRecord
from edgeomni.sync.codec import batch_json, compress, topic_for
from edgeomni.sync.config import SyncConfig

log = logging.getLogger("edgeomni.sync")
SESSION_EXPIRY_S = 3600  # a process's own session; the next process starts another (the outbox resends)
LOCK_RETRY_S = 2.0  # how often a standing-by worker tries the outbox's lock again
NO_MATCHING_SUBSCRIBERS = 16  # MQTT v5 PUBACK reason code


@dataclass
class SyncStats:
    published_messages: int = 0
    acked_records: int = 0
    connects: int = 0
    disconnects: int = 0
    resends: int = 0
    refused_records: int = 0
    unrouted_records: int = 0  # PUBACK "No matching subscribers": no trainer listening, kept and retried
    last_error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _InFlight:
    ids: list[str]
    sent: float
    last_seq: int = field(default=0)


class SyncWorker(threading.Thread):
    def __init__(self, outbox: Outbox, config: SyncConfig, ack_timeout_s: float = 60.0) -> None:
        super().__init__(name="edgeomni-sync", daemon=True)
        config.validate()
        self.outbox, self.config, self.ack_timeout_s = outbox, config, ack_timeout_s
        self.fleet, self.device = config.fleet, config.device_id()
        self.address = config.address()
        if not config.device and self.address.username and self.address.username != self.device:
            log.warning("sync: device id %r is this machine's host name, the broker user is %r: a broker that lets "
                        "each device write only its own topics refuses it (set [sync] device or --device)",
                        self.device, self.address.username)
        self.stats = SyncStats()
        self._stop_requested = threading.Event()
        self._connected = threading.Event()
        self._wake = threading.Event()
        self._unrouted_backoff = 0.0
        # (mid, reason code) from paho's thread, handled in ours
        self._acks: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
        self._retry_refused_at: float | None = None
        self._inflight: dict[int, _InFlight] = {}
        self._cursor = 0  # highest outbox seq handed to paho in this session
        self._lock_file: Any = None  # held while this worker delivers the outbox
        self.standing_by = False  # another process delivers this outbox; we wait for its lock
        self._client = self._make_client()

    # -- public ----------------------------------------------------------------------------------------
    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop_requested.set()
        self._wake.set()
        if self.is_alive():
            self.join(timeout)

    def drain(self, timeout: float) -> bool:
        """Wait until every record in the outbox has been acknowledged (True) or `timeout` passes (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.outbox.count() == 0:
                return True
            self._wake.set()
            time.sleep(0.05)
        return self.outbox.count() == 0

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # -- the thread ------------------------------------------------------------------------------------
    def run(self) -> None:
        if not self._take_outbox():
            return  # stopped while another process delivered the outbox
        client = self._client
        client.connect_async(self.address.host, self.address.port, keepalive=self.config.keepalive_s,
                             clean_start=self._clean_start, properties=self._session_properties())
        client.loop_start()  # paho's network thread: reconnects with backoff by itself
        last_enforce = time.monotonic()
        try:
            while not self._stop_requested.is_set():
                try:
                    self._handle_acks()
                    sent = self._connected.is_set() and self._publish_next()
                    if time.monotonic() - last_enforce > 30.0:
                        last_enforce = time.monotonic()
                        self._enforce()
                except Exception as exc:  # a full disk or a locked outbox: keep the thread, retry later
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"
                    log.exception("sync: %s; retrying in %.0f s", self.stats.last_error, self.config.backoff_max_s)
                    self._stop_requested.wait(self.config.backoff_max_s)
                    self._inflight.clear()  # acks may have been lost with the exception: resend what is left
                    self._cursor = 0
                    continue
                if not sent:
                    self._wake.wait(0.25)
                    self._wake.clear()
            self._handle_acks()
        finally:
            client.disconnect()
            client.loop_stop()
            self._lock_file.close()  # the next worker on this outbox may deliver it

    def _take_outbox(self) -> bool:
        """Hold the outbox's delivery lock, waiting (standing by) while another process holds it; False if
        stopped first."""
        path = Path(self.outbox.path).with_name(Path(self.outbox.path).name + ".sync-lock")
        self._lock_file = os.fdopen(os.open(path, os.O_CREAT | os.O_RDWR, 0o600), "r+")
        while True:
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not self.standing_by:
                    self.standing_by = True
                    log.info("sync: another process delivers %s; standing by until it stops", self.outbox.path)
                if self._stop_requested.wait(LOCK_RETRY_S):
                    self._lock_file.close()
                    return False
                continue
            if self.standing_by:
                log.info("sync: the outbox %s is free; delivering it", self.outbox.path)
            self.standing_by = False
            return True

    def _publish_next(self) -> bool:
        if len(self._inflight) >= self.config.inflight:
            self._resend_if_stale()
            return False
        records = self.outbox.pending(self.config.batch_size, self._cursor, self.config.max_batch_kb * 1024)
        if not records:
            self._resend_if_stale()
            return False
        kind = records[0].kind
        batch, raw = self._fitting(_leading_run(records, kind))
        payload = compress(raw, self.config.compression)
        info = self._client.publish(topic_for(self.fleet, self.device, kind), payload, qos=1)
        if info.rc != 0:  # not connected (any more): paho would queue it, but we resend from the outbox instead
            return False
        self._inflight[info.mid] = _InFlight([r.id for r in batch], time.monotonic(), batch[-1].seq)
        self._cursor = batch[-1].seq
        self.stats.published_messages += 1
        return True

    def _fitting(self, batch: list[OutboxRecord]) -> tuple[list[OutboxRecord], bytes]:
        """The leading records whose message JSON (envelopes included) fits `max_batch_kb`, and that JSON; the
        outbox's own byte budget counts only the records' data, which small records' envelopes outgrow."""
        limit = self.config.max_batch_kb * 1024
        while True:
            raw = batch_json([self._wire(r) for r in batch])
            if len(raw) <= limit or len(batch) == 1:
                return batch, raw
            batch = batch[:max(1, len(batch) * limit // len(raw))]

    def _handle_acks(self) -> None:
        done: list[str] = []
        while True:
            try:
                mid, reason = self._acks.get_nowait()
            except queue.Empty:
                break
            flight = self._inflight.pop(mid, None)
            if flight is None:
                continue
            if getattr(reason, "value", None) == NO_MATCHING_SUBSCRIBERS:
                self.stats.unrouted_records += len(flight.ids)
                self._unrouted_backoff = min(self.config.backoff_max_s,
                                             max(self.config.backoff_min_s, self._unrouted_backoff * 2))
                self.stats.last_error = (f"no trainer is subscribed: the broker dropped a batch of {len(flight.ids)} "
                                         f"record(s); kept, retrying in {self._unrouted_backoff:.1f} s")
                log.warning("sync: %s", self.stats.last_error)
                self._retry_refused_at = time.monotonic() + self._unrouted_backoff
                continue
            self._unrouted_backoff = 0.0
            if getattr(reason, "is_failure", False):
                self.stats.refused_records += len(flight.ids)
                self.stats.last_error = f"broker refused a batch of {len(flight.ids)} record(s): {reason}"
                log.error("sync: %s; they stay in the outbox and are retried in %.0f s", self.stats.last_error,
                          self.config.backoff_max_s)
                self._retry_refused_at = time.monotonic() + self.config.backoff_max_s
                continue
            done.extend(flight.ids)
        if done:
            self.outbox.delete(done)
            self.stats.acked_records += len(done)

    def _resend_if_stale(self) -> None:
        """A batch unacknowledged for too long (a session the broker lost), or refused a while ago: send
        everything pending again."""
        if self._retry_refused_at is not None and time.monotonic() >= self._retry_refused_at:
            self._retry_refused_at = None
            self._inflight.clear()
            self._cursor = 0
            return
        if self._inflight and time.monotonic() - min(f.sent for f in self._inflight.values()) > self.ack_timeout_s:
            log.warning("sync: %d message(s) unacknowledged for %.0f s; resending from the outbox",
                        len(self._inflight), self.ack_timeout_s)
            self.stats.resends += 1
            self._inflight.clear()
            self._cursor = 0

    def _enforce(self) -> None:
        dropped = self.outbox.enforce_bounds()
        if dropped:
            log.warning("outbox over its bounds: dropped %s", dropped)

    def _wire(self, record: OutboxRecord) -> dict[str, Any]:
        return {"id": record.id, "kind": record.kind, "fleet": self.fleet, "device": self.device,
                "ts": record.ts, "data": record.data()}

    # -- paho ------------------------------------------------------------------------------------------
    def _make_client(self) -> Any:
        try:
            import paho.mqtt.client as mqtt  # optional dependency (the `sync` extra): imported only when syncing
        except ImportError:
            raise ConfigError("sync needs paho-mqtt: pip install 'edgeomni[sync]' (paho-mqtt==2.2.0)") from None

        # Unique per process: a fixed id let two clients with one device id take each other's session.
        client_id = f"edgeomni-{self.fleet}-{self.device}-{uuid.uuid4().hex[:8]}"
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self._clean_start = mqtt.MQTT_CLEAN_START_FIRST_ONLY  # a new id has no session; reconnects keep ours
        if self.address.username:
            client.username_pw_set(self.address.username, self.address.password)
        if self.address.tls or self.config.ca_file:
            client.tls_set(ca_certs=self.config.ca_file or None, certfile=self.config.cert_file or None,
                           keyfile=self.config.key_file or None)
        client.reconnect_delay_set(min_delay=self.config.backoff_min_s, max_delay=self.config.backoff_max_s)
        client.max_inflight_messages_set(self.config.inflight)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    @staticmethod
    def _session_properties() -> Any:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = SESSION_EXPIRY_S  # the broker keeps our session through outages
        return properties

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self.stats.last_error = f"broker {self.address.redacted()} refused the connection: {reason_code}"
            log.error("sync: %s", self.stats.last_error)
            return
        self.stats.connects += 1
        log.info("sync: connected to %s as %s/%s", self.address.redacted(), self.fleet, self.device)
        self._connected.set()
        self._wake.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if self._connected.is_set():
            self.stats.disconnects += 1
            log.warning("sync: disconnected from %s (%s); records wait in the outbox", self.address.redacted(),
                        reason_code)
        self._connected.clear()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        self._acks.put((mid, reason_code))
        self._wake.set()


def _leading_run(records: list[OutboxRecord], kind: str) -> list[OutboxRecord]:
    """The records up to the first of another kind (one MQTT topic per kind keeps batches homogeneous)."""
    run = []
    for record in records:
        if record.kind != kind:
            break
        run.append(record)
    return run

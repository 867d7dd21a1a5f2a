"""The trainer's ingest, message by message (no broker): whatever a device sends, the message is stored, counted as
duplicate or rejected with a reason, and acknowledged; only an I/O error leaves it unacknowledged, and then the
trainer reconnects so that the broker really delivers it again."""

from __future__ import annotations

import errno
import json
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from unstorable import caption as _caption
from unstorable import unstorable

from edgeomni.sync.codec import encode_batch
from edgeomni.trainer import ingest
from edgeomni.trainer.ingest import IngestConfig, Ingestor
from edgeomni.trainer.schema import validate_record

pytest.importorskip("paho.mqtt", reason="paho-mqtt (the trainer extra) is not installed")
pytest.importorskip("pyarrow", reason="pyarrow (the trainer extra) is not installed")

TOPIC = "edgeomni/test/dev-a/caption"
MAX_RECORDS = 10_000  # per message: the most a device's [sync] batch_size allows
UNSTORABLE = unstorable()


@pytest.fixture
def ingestor(tmp_path: Path) -> Any:
    ingestor = Ingestor(IngestConfig("mqtt://127.0.0.1:1", tmp_path / "data"))
    yield ingestor
    ingestor.dataset.close()


def _rejected(ingestor: Any) -> int:
    return sum(n for name, n in ingestor.dataset.counters().items() if name.startswith("rejected:"))


@pytest.mark.parametrize("case", sorted(UNSTORABLE))
def test_an_unstorable_record_is_a_counted_reject_not_an_exception(ingestor: Any, case: str) -> None:
    ingestor.handle(TOPIC, UNSTORABLE[case])  # must not raise: a raise leaves the message unacked for ever
    assert _rejected(ingestor) == 1, ingestor.dataset.counters()
    good = _caption()
    ingestor.handle(TOPIC, encode_batch([good]))
    assert ingestor.dataset.counters().get("accepted") == 1


def test_rejects_of_one_message_cost_one_transaction_and_a_bounded_log(ingestor: Any, tmp_path: Path) -> None:
    """Thousands of invalid records in one small message: each counted, all in one commit, a few log lines."""
    bad = [{**_caption(), "fleet": "other"} for _ in range(5000)]
    db = ingestor.dataset._db
    before = db.total_changes
    ingestor.handle(TOPIC, encode_batch([*bad, _caption()]))
    counters = ingestor.dataset.counters()
    assert counters["rejected:schema"] == 5000 and counters["accepted"] == 1
    assert db.total_changes - before <= 10, "one counter row per reason and the stored record, not one per reject"
    lines = (tmp_path / "data" / "rejected.jsonl").read_text().splitlines()
    assert 1 <= len(lines) <= 25 and "more" in json.loads(lines[-1])["detail"]


def test_a_message_with_too_many_records_is_refused_before_any_is_checked(ingestor: Any,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """2,000,000 records of a few bytes each inflate under the size cap; checking them one by one on the MQTT
    thread took minutes per delivery. Counted, not timed: no record of the oversized message is checked."""
    checked: list[Any] = []

    def counting(record: Any, *args: Any) -> Any:
        checked.append(record)
        return validate_record(record, *args)

    monkeypatch.setattr(ingest, "validate_record", counting)
    payload = zlib.compress(b'{"v":1,"records":[' + b",".join([b"0"] * 2_000_000) + b"]}", 9)
    assert len(payload) < 10_000
    ingestor.handle(TOPIC, payload)
    assert checked == []
    assert ingestor.dataset.counters() == {"rejected:too_many_records": 1}
    ingestor.handle(TOPIC, encode_batch([_caption() for _ in range(MAX_RECORDS)]))  # the cap itself is fine
    assert ingestor.dataset.counters()["accepted"] == len(checked) == MAX_RECORDS


class _Message:
    def __init__(self, payload: bytes, mid: int) -> None:
        self.topic, self.payload, self.mid, self.qos = TOPIC, payload, mid, 1


class _Client:
    def __init__(self) -> None:
        self.acked: list[int] = []

    def ack(self, mid: int, qos: int) -> None:
        self.acked.append(mid)


def test_only_an_io_error_leaves_a_message_unacked_and_asks_for_a_reconnect(ingestor: Any,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    client = _Client()
    for mid, payload in enumerate(UNSTORABLE.values(), 1):
        ingestor._on_message(client, None, _Message(payload, mid))
    assert client.acked == list(range(1, len(UNSTORABLE) + 1)), "every unstorable message is acked"
    assert not ingestor.reconnect_due()

    def disk_full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ingestor.dataset, "store", disk_full)
    ingestor._on_message(client, None, _Message(encode_batch([_caption()]), 99))
    assert 99 not in client.acked
    assert ingestor.reconnect_due(now=time.monotonic() + 3600), "the broker redelivers only on a new connection"

"""The wire format between devices and the trainer: one MQTT message = one batch of records.

Topic: ``edgeomni/<fleet>/<device>/<kind>``. Payload: JSON ``{"v": 1, "records": [record, ...]}``,
zlib-compressed unless compression is "none" (a payload that starts with ``{`` is plain JSON). Each
record: ``{"id", "kind", "fleet", "device", "ts", "data": {...}}`` (ids are uuid4: the trainer drops
duplicates by id, which is what makes at-least-once delivery land exactly once in the dataset).
"""

from __future__ import annotations

import json
import zlib
from typing import Any

FORMAT_VERSION = 1
TOPIC_ROOT = "edgeomni"
# Records per message, the most a device's `[sync] batch_size` allows: tiny records inflate to millions under the
# size cap, and each costs the trainer a check on its MQTT thread.
MAX_RECORDS = 10_000
TRAINER_MAX_KB = 4096  # the trainer's default limit on a message, on the wire and inflated (--max-payload-kb)


class PayloadError(ValueError):
    """A payload that cannot be decoded; `reason` is a short machine-readable category."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def topic_for(fleet: str, device: str, kind: str) -> str:
    return f"{TOPIC_ROOT}/{fleet}/{device}/{kind}"


def encode_batch(records: list[dict[str, Any]], compression: str = "zlib") -> bytes:
    return compress(batch_json(records), compression)


def batch_json(records: list[dict[str, Any]]) -> bytes:
    """The JSON a message carries (what the trainer's size limit applies to once inflated)."""
    return json.dumps({"v": FORMAT_VERSION, "records": records}, ensure_ascii=False, separators=(",", ":")).encode()


def compress(raw: bytes, compression: str = "zlib") -> bytes:
    return zlib.compress(raw, 6) if compression == "zlib" else raw


def decode_batch(payload: bytes, max_bytes: int, max_records: int = MAX_RECORDS) -> list[Any]:
    """Payload -> its list of records; raises PayloadError (oversized, compression, json, format, too many)."""
    if len(payload) > max_bytes:
        raise PayloadError("oversized", f"{len(payload)} bytes on the wire, limit {max_bytes}")
    if payload[:1] == b"{":
        raw = payload
    else:
        inflater = zlib.decompressobj()
        try:
            raw = inflater.decompress(payload, max_bytes + 1)  # a zip bomb stops at the limit
        except zlib.error as exc:
            raise PayloadError("bad_compression", f"not zlib and not JSON ({exc})") from None
        if len(raw) > max_bytes or inflater.unconsumed_tail:
            raise PayloadError("oversized", f"inflates past the limit of {max_bytes} bytes")
        if not inflater.eof:
            raise PayloadError("bad_compression", "truncated zlib stream")
    try:
        batch = json.loads(raw)
    except RecursionError:
        raise PayloadError("malformed_json", "nested too deeply") from None
    except ValueError as exc:  # not JSON, not UTF-8, or an integer past Python's digit limit
        raise PayloadError("malformed_json", str(exc)[:200]) from None
    if not isinstance(batch, dict) or batch.get("v") != FORMAT_VERSION or not isinstance(batch.get("records"), list):
        raise PayloadError("bad_format", f'expected {{"v": {FORMAT_VERSION}, "records": [...]}}')
    if len(batch["records"]) > max_records:
        raise PayloadError("too_many_records", f"{len(batch['records'])} records, limit {max_records}")
    return batch["records"]

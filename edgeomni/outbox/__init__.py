"""The device outbox: durable records (captions, metrics, counters, errors, hard examples) waiting for sync."""

from edgeomni.outbox.config import OutboxConfig
from edgeomni.outbox.store import KINDS, Outbox, OutboxError, OutboxRecord

__all__ = ["KINDS", "Outbox", "OutboxConfig", "OutboxError", "OutboxRecord"]

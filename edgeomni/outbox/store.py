"""The device outbox: a SQLite (WAL, synchronous=FULL) queue of records waiting to be synced.

Every `append` is one committed transaction, fsynced before it returns: a crash or a power cut loses
nothing that was appended. A file SQLite finds damaged when it is opened is moved aside (`NAME.corrupt-<time>`,
with its WAL) and a fresh outbox started, with a warning: captions never depend on telemetry. The outbox holds
users' audio and frames, so its file is created 0600 and the folders it creates 0700.

Records leave only through `delete` (sync calls it after the broker's PUBACK)
or through the declared retention policy in `enforce_bounds`, which counts every record it drops:

1. age: telemetry, captions and errors older than `max_age_s` go; hard examples get 4x as long;
2. size: while the stored bytes exceed `max_bytes`, the oldest record of the lowest priority goes
   first: telemetry (metrics, counters), then captions and errors, and hard examples last.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeomni.errors import EdgeOmniError

log = logging.getLogger("edgeomni.outbox")
# Lower priority is dropped first when the outbox is over its bounds.
KIND_PRIORITY = {"metrics": 0, "counters": 0, "caption": 1, "error": 1, "hard_example": 2}
KINDS = tuple(KIND_PRIORITY)
HARD_EXAMPLE_AGE_FACTOR = 4.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    priority INTEGER NOT NULL,
    ts REAL NOT NULL,
    size INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS records_by_priority ON records (priority, seq);
CREATE TABLE IF NOT EXISTS dropped (kind TEXT PRIMARY KEY, count INTEGER NOT NULL);
"""


class OutboxError(EdgeOmniError):
    """The outbox file cannot be opened or written."""


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    seq: int
    id: str
    kind: str
    ts: float
    body: bytes  # the record's JSON data

    def data(self) -> dict[str, Any]:
        return json.loads(self.body)


class Outbox:
    def __init__(self, path: Path | str, max_bytes: int = 256 * 2**20, max_age_s: float = 7 * 86400.0) -> None:
        self.path = Path(path).expanduser()
        self.max_bytes, self.max_age_s = max_bytes, max_age_s
        try:
            self._db, self._bytes = self._open()
        except sqlite3.DatabaseError as exc:
            if not _damaged(exc):
                raise OutboxError(f"outbox {self.path}: cannot open ({exc})") from None
            aside = self._move_aside()
            log.warning("outbox %s is damaged (%s): moved aside to %s; recording goes on in a fresh outbox",
                        self.path, exc, aside.name)
            try:
                self._db, self._bytes = self._open()
            except (OSError, sqlite3.Error) as again:
                raise OutboxError(f"outbox {self.path}: cannot open ({again})") from None
        except OSError as exc:
            raise OutboxError(f"outbox {self.path}: cannot open ({exc})") from None
        self._lock = threading.Lock()  # one connection shared by the sink thread and the sync thread

    def _open(self) -> tuple[sqlite3.Connection, int]:
        """The connection and the stored bytes (reading them walks the table: a damaged file fails here)."""
        _private_file(self.path)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so each append is exactly one transaction.
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # fsync the WAL on every commit: durable on power loss
            db.executescript(_SCHEMA)
            return db, int(db.execute("SELECT COALESCE(SUM(size), 0) FROM records").fetchone()[0])
        except BaseException:
            db.close()
            raise

    def _move_aside(self) -> Path:
        """The damaged file and its WAL and shared-memory files -> NAME.corrupt-<UTC time>[-wal|-shm]."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            source = self.path.with_name(self.path.name + suffix)
            if source.exists():
                os.replace(source, aside.with_name(aside.name + suffix))
        return aside

    # -- writing ---------------------------------------------------------------------------------------
    def append(self, kind: str, data: dict[str, Any], ts: float | None = None) -> str:
        return self.append_many([(kind, data)], ts)[0]

    def append_many(self, items: Iterable[tuple[str, dict[str, Any]]], ts: float | None = None) -> list[str]:
        """Commit several records in one transaction (one fsync); returns their ids."""
        rows = []
        for kind, data in items:
            if kind not in KIND_PRIORITY:
                raise OutboxError(f"outbox {self.path}: unknown record kind {kind!r} (known: {', '.join(KINDS)})")
            body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
            rows.append((str(uuid.uuid4()), kind, KIND_PRIORITY[kind], time.time() if ts is None else ts,
                         len(body), body))
        with self._lock:
            self._write("INSERT INTO records (id, kind, priority, ts, size, body) VALUES (?, ?, ?, ?, ?, ?)", rows)
            self._bytes += sum(row[4] for row in rows)
            if self._bytes > self.max_bytes:
                self._enforce_locked(time.time())
        return [row[0] for row in rows]

    def delete(self, ids: Iterable[str]) -> int:
        """Remove delivered records (called once the broker acknowledged them)."""
        keys = [(i,) for i in ids]
        with self._lock:
            before = self._db.total_changes
            self._write("DELETE FROM records WHERE id = ?", keys)
            removed = self._db.total_changes - before
            self._bytes = self._stored_bytes()
        return removed

    def enforce_bounds(self, now: float | None = None) -> dict[str, int]:
        """Apply the retention policy; returns what it dropped, by kind."""
        with self._lock:
            return self._enforce_locked(time.time() if now is None else now)

    # -- reading ---------------------------------------------------------------------------------------
    def pending(self, limit: int = 100, after_seq: int = 0, max_bytes: int | None = None) -> list[OutboxRecord]:
        """The oldest records after `after_seq`, at most `limit` and (beyond the first) `max_bytes`."""
        with self._lock:
            rows = self._db.execute("SELECT seq, id, kind, ts, body FROM records WHERE seq > ? ORDER BY seq LIMIT ?",
                                    (after_seq, limit)).fetchall()
        records, total = [], 0
        for row in rows:
            total += len(row[4])
            if records and max_bytes is not None and total > max_bytes:
                break
            records.append(OutboxRecord(*row))
        return records

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0])

    def stats(self) -> dict[str, Any]:
        with self._lock:
            pending = dict(self._db.execute("SELECT kind, COUNT(*) FROM records GROUP BY kind").fetchall())
            dropped = dict(self._db.execute("SELECT kind, count FROM dropped").fetchall())
        return {"path": str(self.path), "pending": pending, "bytes": self._bytes, "dropped": dropped}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- internals (call with the lock held) ---------------------------------------------------------------
    def _write(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(sql, rows)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise OutboxError(f"outbox {self.path}: write failed ({exc})") from None

    def _stored_bytes(self) -> int:
        return int(self._db.execute("SELECT COALESCE(SUM(size), 0) FROM records").fetchone()[0])


    def _enforce_locked(self, now: float) -> dict[str, int]:
        self._bytes = self._stored_bytes()  # another process (a standalone `edgeomni sync`) may have deleted rows
        victims: list[tuple[int, str, int]] = self._db.execute(
            "SELECT seq, kind, size FROM records WHERE (priority < 2 AND ts < ?) OR (priority = 2 AND ts < ?)",
            (now - self.max_age_s, now - self.max_age_s * HARD_EXAMPLE_AGE_FACTOR)).fetchall()
        excess = self._bytes - sum(v[2] for v in victims) - self.max_bytes
        if excess > 0:
            aged = {v[0] for v in victims}
            for seq, kind, size in self._db.execute("SELECT seq, kind, size FROM records ORDER BY priority, seq"):
                if excess <= 0:
                    break
                if seq not in aged:
                    victims.append((seq, kind, size))
                    excess -= size
        if not victims:
            return {}
        dropped: dict[str, int] = {}
        for _, kind, _ in victims:
            dropped[kind] = dropped.get(kind, 0) + 1
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("DELETE FROM records WHERE seq = ?", [(v[0],) for v in victims])
            self._db.executemany("INSERT INTO dropped (kind, count) VALUES (?, ?) "
                                 "ON CONFLICT(kind) DO UPDATE SET count = count + excluded.count", dropped.items())
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise OutboxError(f"outbox {self.path}: retention cleanup failed ({exc})") from None
        self._bytes = self._stored_bytes()
        return dropped


def _damaged(exc: sqlite3.DatabaseError) -> bool:
    """SQLite's own word that the file is not (or no longer) a database; not a locked or unreadable one."""
    name = getattr(exc, "sqlite_errorname", "")
    return name == "SQLITE_NOTADB" or name.startswith("SQLITE_CORRUPT")


def _private_file(path: Path) -> None:
    """Create the folders the outbox needs 0700 and its file 0600 (SQLite gives its WAL the file's mode); an
    existing file readable by others is tightened. Folders that already exist are left as they are."""
    missing = [folder for folder in [path.parent, *path.parent.parents] if not folder.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    if path.stat().st_mode & 0o077 and path.stat().st_uid == os.getuid():
        path.chmod(0o600)

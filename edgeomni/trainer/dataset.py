"""The trainer's dataset: Parquet files partitioned by date and device, plus a durable id index.

Layout of DIR:
  dataset/date=YYYY-MM-DD/device=NAME/part-<time>-<uuid>.parquet   (hive partitioning)
  index.sqlite   ids already stored, files committed, ingest counters (accepted, duplicates, rejected by reason)
  rejected.jsonl one line per rejected payload or record: when, topic, reason, detail

Exactly once: a batch's new records are written to `part-*.parquet.tmp` (fsynced), then their ids and the
file name are committed to the index in one transaction, then the file is renamed into place, and only
then is the MQTT message acknowledged. A crash before the commit leaves a tmp file that `recover()`
deletes (the broker redelivers the message); a crash after it leaves one that `recover()` renames.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

from edgeomni.errors import EdgeOmniError

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS ids (id TEXT PRIMARY KEY, file TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS files (name TEXT PRIMARY KEY, records INTEGER NOT NULL, committed REAL NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, count INTEGER NOT NULL);
"""
BLOB_FIELDS = {"audio_wav_b64": "audio_wav", "thumbnail_png_b64": "thumbnail_png", "image_png_b64": "image_png"}


def _arrow_schema() -> Any:
    import pyarrow as pa

    return pa.schema([("id", pa.string()), ("kind", pa.string()), ("fleet", pa.string()), ("ts", pa.float64()),
                      ("received", pa.float64()), ("text", pa.string()), ("latency_ms", pa.float64()),
                      ("confidence", pa.float64()), ("data", pa.string()), ("audio_wav", pa.binary()),
                      ("thumbnail_png", pa.binary()), ("image_png", pa.binary())])


class Dataset:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser()
        self.files_dir = self.root / "dataset"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        # One trainer per DIR: recover() must never touch another live trainer's half-written files.
        self._lock = (self.root / ".trainer.lock").open("a+")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise EdgeOmniError(f"{self.root} is in use by another trainer; give each trainer process its own "
                                "--data DIR (reports and build-sets take several)") from None
        self._db = sqlite3.connect(self.root / "index.sqlite", isolation_level=None, timeout=30.0,
                                   check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA_SQL)
        self._rejected_log = (self.root / "rejected.jsonl").open("a", encoding="utf-8")
        self.recover()

    def recover(self) -> dict[str, int]:
        """Finish or undo writes a crash interrupted (see the module docstring)."""
        committed = {row[0] for row in self._db.execute("SELECT name FROM files")}
        done = {"renamed": 0, "deleted": 0}
        for tmp in self.files_dir.rglob("*.parquet.tmp"):
            final = tmp.with_suffix("")
            if str(final.relative_to(self.files_dir)) in committed:
                os.replace(tmp, final)
                done["renamed"] += 1
            else:
                tmp.unlink()
                done["deleted"] += 1
        return done

    def new_ids(self, ids: list[str]) -> set[str]:
        known: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            known.update(row[0] for row in self._db.execute(f"SELECT id FROM ids WHERE id IN ({marks})", chunk))
        return set(ids) - known

    def append(self, device: str, records: list[dict[str, Any]]) -> int:
        """Store records (already validated, not yet stored, all from one device); returns how many."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        received = time.time()
        by_date: dict[str, list[dict[str, Any]]] = {}
        for record in records:
            day = dt.datetime.fromtimestamp(record["ts"], dt.UTC).strftime("%Y-%m-%d")
            by_date.setdefault(day, []).append(record)
        written: list[tuple[str, Path, list[str]]] = []
        for day, group in by_date.items():
            rows = [_row(r, received) for r in group]
            table = pa.Table.from_pylist(rows, schema=_arrow_schema())
            relative = Path(f"date={day}") / f"device={device}" / f"part-{received:.6f}-{uuid.uuid4().hex[:8]}.parquet"
            target = self.files_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            pq.write_table(table, tmp)
            with tmp.open("rb+") as handle:
                os.fsync(handle.fileno())
            written.append((str(relative), tmp, [r["id"] for r in group]))
        try:
            self._db.execute("BEGIN IMMEDIATE")
            for name, _, ids in written:
                self._db.executemany("INSERT INTO ids (id, file) VALUES (?, ?)", [(i, name) for i in ids])
                self._db.execute("INSERT INTO files (name, records, committed) VALUES (?, ?, ?)",
                                 (name, len(ids), received))
            self._count_locked("accepted", len(records))
            self._db.execute("COMMIT")
        except sqlite3.Error:
            # e.g. another trainer on the same DIR stored one of these ids first: nothing of this batch is
            # kept, the message stays unacked and its redelivery is deduplicated.
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            for _, tmp, _ in written:
                tmp.unlink(missing_ok=True)
            raise
        for _, tmp, _ in written:
            os.replace(tmp, tmp.with_suffix(""))
        return len(records)

    def count(self, name: str, n: int = 1) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        self._count_locked(name, n)
        self._db.execute("COMMIT")

    def reject(self, topic: str, reason: str, detail: str) -> None:
        self.count(f"rejected:{reason}")
        self._rejected_log.write(json.dumps({"at": time.time(), "topic": topic, "reason": reason,
                                             "detail": detail[:500]}) + "\n")
        self._rejected_log.flush()

    def counters(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT name, count FROM counters").fetchall())

    def close(self) -> None:
        self._rejected_log.close()
        self._db.close()
        self._lock.close()

    def _count_locked(self, name: str, n: int) -> None:
        self._db.execute("INSERT INTO counters (name, count) VALUES (?, ?) "
                         "ON CONFLICT(name) DO UPDATE SET count = count + excluded.count", (name, n))


def _row(record: dict[str, Any], received: float) -> dict[str, Any]:
    import base64

    data = dict(record["data"])
    blobs = {column: base64.b64decode(data.pop(field)) if field in data else None
             for field, column in BLOB_FIELDS.items()}
    number = (int, float)
    return {"id": record["id"], "kind": record["kind"], "fleet": record["fleet"], "ts": float(record["ts"]),
            "received": received, "text": data.get("text") if isinstance(data.get("text"), str) else None,
            "latency_ms": float(data["latency_ms"]) if isinstance(data.get("latency_ms"), number) else None,
            "confidence": float(data["confidence"]) if isinstance(data.get("confidence"), number) else None,
            "data": json.dumps(data, ensure_ascii=False), **blobs}


def read_counters(root: Path) -> dict[str, int]:
    """Ingest counters, opened read-only (unlike `Dataset`, this never runs `recover()` under a live trainer)."""
    index = (Path(root).expanduser().resolve() / "index.sqlite").as_uri()
    with contextlib.closing(sqlite3.connect(f"{index}?mode=ro", uri=True)) as db:
        return dict(db.execute("SELECT name, count FROM counters").fetchall())


def read_datasets(roots: list[Path]) -> Any:
    """Several trainers' directories as one table."""
    import pyarrow as pa

    return pa.concat_tables([read_dataset(root) for root in roots])


def read_dataset(root: Path) -> Any:
    """The whole dataset as one pyarrow Table (with `date` and `device` from the partition paths). Files written
    before a column was added read it as nulls: the schema is this version's, not the first file's."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    keys = pa.schema([("date", pa.string()), ("device", pa.string())])
    schema = pa.schema(list(_arrow_schema()) + list(keys))
    files_dir = Path(root).expanduser() / "dataset"
    files = sorted(str(path) for path in files_dir.rglob("*.parquet")) if files_dir.is_dir() else []
    if not files:  # never a half-written *.parquet.tmp
        return schema.empty_table()
    partitioning = ds.partitioning(keys, flavor="hive")
    return ds.dataset(files, schema=schema, format="parquet", partitioning=partitioning,
                      partition_base_dir=str(files_dir)).to_table()

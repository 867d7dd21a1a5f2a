"""The trainer's dataset: Parquet files partitioned by date and device, plus a durable id index.

Layout of DIR:
  dataset/date=YYYY-MM-DD/device=NAME/part-<time>-<uuid>.parquet   (hive partitioning)
  index.sqlite   ids already stored, files committed, ingest counters (accepted, duplicates, rejected by reason)
  rejected.jsonl rejected payloads and records: when, topic, reason, detail (at most `LOGGED_REJECTS` lines per
                 message, then one line saying how many more)

Exactly once: a batch's new records are written to `part-*.parquet.tmp` (fsynced), then their ids and the
file name are committed to the index in one transaction, then the file is renamed into place, and only
then is the MQTT message acknowledged. A message's accepted records, duplicates and rejects are counted in that
same transaction (`store`). A crash before the commit leaves a tmp file that `recover()`
deletes (the broker redelivers the message); a crash after it leaves one that `recover()` renames.

Compaction (one file per MQTT batch adds up to thousands a day): a partition's files are merged into one
`part-compact-*.parquet.tmp` (fsynced); one transaction then commits the new file, points the ids at it,
and moves the old names from `files` to `retired`; then the new file is renamed into place and the old
ones deleted. `recover()` finishes an interrupted compaction the same way (rename, delete the retired).
Readers list the committed files from the index, so they never see a record twice.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import fcntl
import json
import os
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from edgeomni.errors import EdgeOmniError
from edgeomni.trainer.schema import BLOB_FIELDS

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS ids (id TEXT PRIMARY KEY, file TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS files (name TEXT PRIMARY KEY, records INTEGER NOT NULL, committed REAL NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS retired (name TEXT PRIMARY KEY) WITHOUT ROWID;
"""
LOGGED_REJECTS = 20  # rejected.jsonl lines per message; the rest are counted in one more line
# What turning a checked record into a row can still raise on input the schema missed: a reject, never a crash.
CONVERSION_ERRORS = (ValueError, TypeError, OverflowError, KeyError, RecursionError, binascii.Error)
Reject = tuple[str, str]  # (reason, detail)


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
        self._writing = threading.RLock()  # the MQTT thread stores while the trainer's main thread compacts
        self.recover()

    def recover(self) -> dict[str, int]:
        """Finish or undo writes a crash interrupted (see the module docstring)."""
        committed = {row[0] for row in self._db.execute("SELECT name FROM files")}
        done = {"renamed": 0, "deleted": 0}
        for tmp in self.files_dir.rglob("*.parquet.tmp"):
            final = tmp.with_suffix("")
            if str(final.relative_to(self.files_dir)) in committed:
                os.replace(tmp, final)
                _fsync_folder(final.parent)
                done["renamed"] += 1
            else:
                tmp.unlink()
                done["deleted"] += 1
        retired = [row[0] for row in self._db.execute("SELECT name FROM retired")]
        for name in retired:  # merged into a committed compacted file before the crash
            (self.files_dir / name).unlink(missing_ok=True)
        if retired:
            self._db.execute("DELETE FROM retired")
        done["retired"] = len(retired)
        return done

    def compact(self, before: str | None = None, min_files: int = 4) -> dict[str, int]:
        """Merge each partition (date, device) holding at least `min_files` files into one, for dates before
        `before` (YYYY-MM-DD; default: every date). Returns how many partitions and files it merged."""
        by_partition: dict[str, list[tuple[str, int]]] = {}
        with self._writing:
            listed = self._db.execute("SELECT name, records FROM files ORDER BY name").fetchall()
        for name, records in listed:
            partition = str(Path(name).parent)
            day = partition.split("/", 1)[0].removeprefix("date=")
            if before is None or day < before:
                by_partition.setdefault(partition, []).append((name, records))
        done = {"partitions": 0, "files_merged": 0, "records": 0}
        for partition, files in sorted(by_partition.items()):
            if len(files) >= min_files:
                self._compact_partition(partition, files)
                done["partitions"] += 1
                done["files_merged"] += len(files)
                done["records"] += sum(records for _, records in files)
        return done

    def _compact_partition(self, partition: str, files: list[tuple[str, int]]) -> None:
        import pyarrow.dataset as ds
        import pyarrow.parquet as pq

        names = [name for name, _ in files]
        paths = [str(self.files_dir / n) for n in names]
        table = ds.dataset(paths, schema=_arrow_schema(), format="parquet").to_table()
        if table.num_rows != sum(records for _, records in files):
            raise EdgeOmniError(f"{self.files_dir / partition}: its files hold {table.num_rows} records, the index "
                                f"says {sum(r for _, r in files)}; not compacting it")
        target = self.files_dir / partition / f"part-compact-{time.time():.6f}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = target.with_name(target.name + ".tmp")
        pq.write_table(table, tmp)
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        name = str(target.relative_to(self.files_dir))
        # Only the index update waits for the MQTT thread's writes: merging a past day's files does not.
        with self._writing:
            self._retire(name, table.column("id").to_pylist(), names, tmp, target)

    def _retire(self, name: str, ids: list[str], names: list[str], tmp: Path, target: Path) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("INSERT INTO files (name, records, committed) VALUES (?, ?, ?)",
                             (name, len(ids), time.time()))
            # By id (the primary key), not by file: a `file IN (...)` match reads every id ever stored, and an
            # index on file would store every file name once more per id.
            moved = self._db.executemany("UPDATE ids SET file = ? WHERE id = ?", ((name, i) for i in ids)).rowcount
            if moved != len(ids):
                raise sqlite3.IntegrityError(f"{len(ids)} records in {', '.join(names[:3])}...: {moved} of their "
                                             "ids are in the index")
            for start in range(0, len(names), 500):  # under SQLite's limit on bound parameters
                chunk = names[start:start + 500]
                self._db.execute(f"DELETE FROM files WHERE name IN ({','.join('?' * len(chunk))})", chunk)
            self._db.executemany("INSERT OR IGNORE INTO retired (name) VALUES (?)", [(n,) for n in names])
            self._db.execute("COMMIT")
        except sqlite3.Error:
            self._db.execute("ROLLBACK")
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, target)
        _fsync_folder(target.parent)
        for old in names:
            (self.files_dir / old).unlink(missing_ok=True)
        self._db.executemany("DELETE FROM retired WHERE name = ?", [(n,) for n in names])

    def new_ids(self, ids: list[str]) -> set[str]:
        with self._writing:
            return self._new_ids(ids)

    def _new_ids(self, ids: list[str]) -> set[str]:
        known: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            known.update(row[0] for row in self._db.execute(f"SELECT id FROM ids WHERE id IN ({marks})", chunk))
        return set(ids) - known

    def append(self, device: str, records: list[dict[str, Any]]) -> int:
        """Store records (already validated, not yet stored, all from one device); returns how many."""
        return self.store("", device, records, [])

    def store(self, topic: str, device: str, records: list[dict[str, Any]], rejects: list[Reject],
              duplicates: int = 0) -> int:
        """One MQTT message's outcome: its new records (validated, all from `device`) are written, and they, the
        duplicates and the rejects are counted in one transaction. A record that still cannot be converted is
        one more reject. Raises only on I/O (OSError, sqlite3.OperationalError): then nothing is kept."""
        with self._writing:
            return self._store(topic, device, records, list(rejects), duplicates)

    def _store(self, topic: str, device: str, records: list[dict[str, Any]], rejects: list[Reject],
               duplicates: int) -> int:
        import pyarrow as pa
        import pyarrow.parquet as pq

        received = time.time()
        by_date: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for record in records:
            try:
                row = _row(record, received)
                day = dt.datetime.fromtimestamp(record["ts"], dt.UTC).strftime("%Y-%m-%d")
            except CONVERSION_ERRORS as exc:
                rejects.append(("unstorable", f"record {str(record.get('id'))[:64]}: {type(exc).__name__}: {exc}"))
                continue
            by_date.setdefault(day, []).append((record["id"], row))
        written: list[tuple[str, Path, list[str]]] = []
        try:
            for day, group in by_date.items():
                table = pa.Table.from_pylist([row for _, row in group], schema=_arrow_schema())
                name = f"part-{received:.6f}-{uuid.uuid4().hex[:8]}.parquet"
                relative = Path(f"date={day}") / f"device={device}" / name
                target = self.files_dir / relative
                _make_folders(target.parent)
                tmp = target.with_name(target.name + ".tmp")
                written.append((str(relative), tmp, [record_id for record_id, _ in group]))
                pq.write_table(table, tmp)
                with tmp.open("rb+") as handle:
                    os.fsync(handle.fileno())
            self._log_rejects(topic, rejects)
            self._commit(written, rejects, duplicates, received)
        except BaseException:
            for _, tmp, _ in written:
                tmp.unlink(missing_ok=True)
            raise
        for _, tmp, _ in written:
            os.replace(tmp, tmp.with_suffix(""))
        for folder in {tmp.parent for _, tmp, _ in written}:
            _fsync_folder(folder)  # the renames themselves survive a power cut
        return sum(len(ids) for _, _, ids in written)

    def _commit(self, written: list[tuple[str, Path, list[str]]], rejects: list[Reject], duplicates: int,
                received: float) -> None:
        counts: dict[str, int] = {}
        for reason, _ in rejects:
            counts[f"rejected:{reason}"] = counts.get(f"rejected:{reason}", 0) + 1
        if duplicates:
            counts["duplicates"] = duplicates
        accepted = sum(len(ids) for _, _, ids in written)
        if accepted:
            counts["accepted"] = accepted
        if not counts:
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
            for name, _, ids in written:
                self._db.executemany("INSERT INTO ids (id, file) VALUES (?, ?)", [(i, name) for i in ids])
                self._db.execute("INSERT INTO files (name, records, committed) VALUES (?, ?, ?)",
                                 (name, len(ids), received))
            for name, n in counts.items():
                self._count_locked(name, n)
            self._db.execute("COMMIT")
        except sqlite3.Error:
            # e.g. an id stored meanwhile by another process: nothing of this message is kept, it stays unacked
            # and its redelivery is deduplicated.
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _log_rejects(self, topic: str, rejects: list[Reject]) -> None:
        if not rejects:
            return
        now = time.time()
        lines = [{"at": now, "topic": topic, "reason": reason, "detail": detail[:500]}
                 for reason, detail in rejects[:LOGGED_REJECTS]]
        if len(rejects) > LOGGED_REJECTS:
            reasons: dict[str, int] = {}
            for reason, _ in rejects[LOGGED_REJECTS:]:
                reasons[reason] = reasons.get(reason, 0) + 1
            lines.append({"at": now, "topic": topic, "reason": "more",
                          "detail": f"{len(rejects) - LOGGED_REJECTS} more rejects in this message: {reasons}"})
        self._rejected_log.write("".join(json.dumps(line) + "\n" for line in lines))
        self._rejected_log.flush()

    def counters(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT name, count FROM counters").fetchall())

    def close(self) -> None:
        with self._writing:  # not in the middle of a compaction's index update
            self._rejected_log.close()
            self._db.close()
            self._lock.close()

    def _count_locked(self, name: str, n: int) -> None:
        self._db.execute("INSERT INTO counters (name, count) VALUES (?, ?) "
                         "ON CONFLICT(name) DO UPDATE SET count = count + excluded.count", (name, n))


def _row(record: dict[str, Any], received: float) -> dict[str, Any]:
    """A checked record as a dataset row; raises one of CONVERSION_ERRORS on what the schema should have refused."""
    data = dict(record["data"])
    blobs = {column: base64.b64decode(data.pop(field), validate=True) if field in data else None
             for field, column in BLOB_FIELDS.items()}
    number = (int, float)
    row = {"id": record["id"], "kind": record["kind"], "fleet": record["fleet"], "ts": float(record["ts"]),
           "received": received, "text": data.get("text") if isinstance(data.get("text"), str) else None,
           "latency_ms": float(data["latency_ms"]) if isinstance(data.get("latency_ms"), number) else None,
           "confidence": float(data["confidence"]) if isinstance(data.get("confidence"), number) else None,
           "data": json.dumps(data, ensure_ascii=False), **blobs}
    for name in ("id", "kind", "fleet", "text", "data"):
        if row[name] is not None:
            row[name].encode("utf-8")  # a lone surrogate: UnicodeEncodeError (a ValueError) here, not in pyarrow
    return row


def read_counters(root: Path) -> dict[str, int]:
    """Ingest counters, opened read-only (unlike `Dataset`, this never runs `recover()` under a live trainer)."""
    index = (Path(root).expanduser().resolve() / "index.sqlite").as_uri()
    with contextlib.closing(sqlite3.connect(f"{index}?mode=ro", uri=True)) as db:
        return dict(db.execute("SELECT name, count FROM counters").fetchall())


def read_datasets(roots: list[Path], columns: list[str] | None = None) -> Any:
    """Several trainers' directories as one table (only `columns`, if given)."""
    import pyarrow as pa

    return pa.concat_tables([read_dataset(root, columns) for root in roots])


def read_dataset(root: Path, columns: list[str] | None = None) -> Any:
    """The whole dataset as one pyarrow Table (with `date` and `device` from the partition paths), or only
    `columns` of it (a reader that needs no media leaves its blobs on disk). Only files the index lists as
    committed are read (never a half-written tmp, never a file a compaction retired), and with this version's
    schema, so files written before a column was added read it as nulls."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    keys = pa.schema([("date", pa.string()), ("device", pa.string())])
    schema = pa.schema(list(_arrow_schema()) + list(keys))
    files_dir = Path(root).expanduser() / "dataset"
    for attempt in range(3):
        files = [str(path) for path in _committed_files(Path(root).expanduser()) if path.is_file()]
        if not files:
            empty = schema.empty_table()
            return empty if columns is None else empty.select(columns)
        try:
            return ds.dataset(files, schema=schema, format="parquet", partition_base_dir=str(files_dir),
                              partitioning=ds.partitioning(keys, flavor="hive")).to_table(columns=columns)
        except FileNotFoundError:  # a live trainer compacted a partition while we read: list again
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _committed_files(root: Path) -> list[Path]:
    index = root / "index.sqlite"
    if not index.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"{index.resolve().as_uri()}?mode=ro", uri=True)) as db:
        return [root / "dataset" / name for (name,) in db.execute("SELECT name FROM files ORDER BY name")]


def _make_folders(folder: Path) -> None:
    """mkdir -p, fsyncing the parent of each folder it creates: a new partition's name survives a power cut."""
    missing = [f for f in [folder, *folder.parents] if not f.exists()]
    for new in reversed(missing):
        new.mkdir(exist_ok=True)
        _fsync_folder(new.parent)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

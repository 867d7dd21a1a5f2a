"""Helpers for the sync tests: trainer/sync subprocesses, outbox generation, reading the trainer's dataset."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from edgeomni.outbox import Outbox

EDGEOMNI = [sys.executable, "-m", "edgeomni"]


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([*EDGEOMNI, *args], stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})


def start_trainer(broker_url: str, data: Path, log: Path, client_id: str = "edgeomni-trainer-1",
                  *extra: str) -> subprocess.Popen[bytes]:
    proc = spawn(["trainer", "--broker", broker_url, "--data", str(data), "--client-id", client_id, *extra], log)
    wait_for(lambda: "subscribed to" in log.read_text(errors="replace") or proc.poll() is not None, 30,
             "the trainer to subscribe")
    assert proc.poll() is None, f"trainer exited early:\n{log.read_text()[-3000:]}"
    return proc


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def stored_ids(data: Path) -> list[str]:
    """Every record id in the trainer's Parquet files (duplicates included: that is what we check)."""
    import pyarrow.parquet as pq

    ids: list[str] = []
    for path in sorted((data / "dataset").rglob("*.parquet")):
        ids.extend(pq.read_table(path, columns=["id"]).column("id").to_pylist())
    return ids


def ingest_counters(data: Path) -> dict[str, int]:
    index = data / "index.sqlite"
    if not index.exists():
        return {}
    with sqlite3.connect(index) as db:
        return dict(db.execute("SELECT name, count FROM counters").fetchall())


def fill_outbox(path: Path, count: int, chunk: int = 2000) -> list[str]:
    """`count` telemetry records (each a realistic per-stage latency window), committed in chunks."""
    outbox = Outbox(path)
    ids: list[str] = []
    try:
        for start in range(0, count, chunk):
            ids += outbox.append_many(
                ("metrics", {"scope": "window", "source": "synthetic", "window_s": 10.0, "seq": i,
                             "latency_ms": {"final": {"n": 3, "p50": 120.0 + i % 50, "p95": 180.0, "p99": 190.0,
                                                      "max": 195.0}}})
                for i in range(start, min(count, start + chunk)))
    finally:
        outbox.close()
    return ids


def outbox_count(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM records").fetchone()[0])

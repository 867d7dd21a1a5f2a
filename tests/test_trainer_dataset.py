"""The trainer's dataset on disk: a committed file's name survives a power cut (its folder is fsynced after the
rename), and `trainer report` reads no media."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pyarrow", reason="pyarrow (the trainer extra) is not installed")


def _errors(device: str, n: int, day_offset: int = 0) -> list[dict[str, Any]]:
    ts = time.time() - day_offset * 86400
    return [{"id": f"{device}-{day_offset}-{time.monotonic_ns()}-{i}", "kind": "error", "fleet": "f",
             "device": device, "ts": ts, "data": {"message": "m"}} for i in range(n)]


def _synced_folders(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Folders fsynced from now on (by any module: os.fsync is patched where it lives)."""
    synced: list[Path] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def test_a_committed_file_s_folder_is_fsynced_after_its_rename(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeomni.trainer.dataset import Dataset

    dataset = Dataset(tmp_path / "data")
    synced = _synced_folders(monkeypatch)
    dataset.append("dev-a", _errors("dev-a", 3))
    stored = next((tmp_path / "data" / "dataset").rglob("*.parquet"))
    assert stored.parent in synced, "the rename into place is durable only once its folder is fsynced"
    assert stored.parent.parent in synced and (tmp_path / "data" / "dataset") in synced, "new folders too"
    for days in (3, 3, 3, 3):
        dataset.append("dev-a", _errors("dev-a", 2, days))
    synced.clear()
    assert dataset.compact()["partitions"] == 1
    compacted = next(p for p in (tmp_path / "data" / "dataset").rglob("part-compact-*.parquet"))
    assert compacted.parent in synced
    dataset.close()


def test_the_report_reads_no_media(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeomni.trainer import report
    from edgeomni.trainer.dataset import Dataset

    dataset = Dataset(tmp_path / "data")
    dataset.append("dev-a", _errors("dev-a", 3))
    dataset.close()
    asked: list[Any] = []
    real = report.read_datasets

    def spy(roots: list[Path], columns: list[str] | None = None) -> Any:
        asked.append(columns)
        return real(roots) if columns is None else real(roots, columns=columns)

    monkeypatch.setattr(report, "read_datasets", spy)
    assert report.fleet_report([tmp_path / "data"])["devices"]["dev-a"]["errors"] == 3
    assert asked and asked[0] is not None, "every column was read"
    assert not {"audio_wav", "thumbnail_png", "image_png"} & set(asked[0])

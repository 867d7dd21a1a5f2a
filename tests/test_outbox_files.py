"""The outbox file on the device: a damaged one never stops captioning (it is moved aside and a fresh one started),
and what it holds (users' audio and frames) is readable by its owner only."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from pathlib import Path

import pytest
from media_factory import make_speech_wav
from test_run_e2e import finals, run_cli

from edgeomni.outbox import Outbox


def _damaged(path: Path) -> Path:
    """A real outbox whose table pages were overwritten (a power cut on a bad SD card)."""
    outbox = Outbox(path)
    outbox.append_many([("caption", {"text": "x" * 2000, "n": i}) for i in range(200)])
    outbox.close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.seek(size // 3)
        handle.write(b"\xff" * (size // 3))
    return path


CORRUPT = {
    "not a database": lambda path: path.write_bytes(b"this is not an SQLite file " * 200),
    "damaged pages": _damaged,
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_a_corrupt_outbox_is_moved_aside_and_a_fresh_one_started(tmp_path: Path, case: str,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "outbox.sqlite"
    CORRUPT[case](path)
    with caplog.at_level(logging.WARNING):
        outbox = Outbox(path)
    try:
        assert outbox.count() == 0
        outbox.append("caption", {"text": "after"})
        assert [r.data() for r in outbox.pending()] == [{"text": "after"}]
    finally:
        outbox.close()
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("outbox.sqlite.corrupt-")]
    assert aside, list(tmp_path.iterdir())
    assert "moved aside" in caplog.text and min(aside, key=lambda p: len(p.name)).name in caplog.text


def test_a_run_with_a_corrupt_outbox_still_captions(default_bundle: Path, tmp_path: Path) -> None:
    outbox = tmp_path / "outbox.sqlite"
    outbox.write_bytes(b"garbage" * 500)
    wav = make_speech_wav(tmp_path / "s.wav", "Please send the report by Friday.", speed=150)
    code, events, err = run_cli(default_bundle, "--source", str(wav), "--no-realtime", "--outbox", str(outbox))
    assert code == 0, err
    assert "report" in finals(events).lower()
    assert "moved aside" in err
    assert Outbox(outbox).count() > 0  # the fresh outbox recorded the run


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_outbox_is_private_to_its_owner(tmp_path: Path) -> None:
    os.umask(0o022)
    path = tmp_path / "cache" / "outbox" / "outbox.sqlite"
    outbox = Outbox(path)
    outbox.append("hard_example", {"audio_wav_b64": "UklGRg=="})
    try:
        assert _mode(path.parent) == 0o700 and _mode(path.parent.parent) == 0o700
        for name in ("outbox.sqlite", "outbox.sqlite-wal", "outbox.sqlite-shm"):
            assert _mode(path.parent / name) == 0o600, name
    finally:
        outbox.close()
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    loose = shared / "loose.sqlite"  # made by an older version: 0644
    Outbox(loose).close()
    loose.chmod(0o644)
    Outbox(loose).close()
    assert _mode(loose) == 0o600
    assert _mode(shared) == 0o755, "a folder the outbox did not create keeps its mode"

"""The data loop's units: the outbox (durability, retention policy), its sink, the wire codec, schema and config."""

from __future__ import annotations

import base64
import io
import json
import re
import signal
import struct
import subprocess
import sys
import time
import wave
import zlib
from pathlib import Path

import numpy as np
import pytest
from event_records import event

from edgeomni.config import RunConfig
from edgeomni.errors import ConfigError
from edgeomni.frames import AudioFrame, VideoFrame
from edgeomni.outbox import Outbox, OutboxConfig
from edgeomni.outbox.sink import OutboxSink
from edgeomni.sync.codec import PayloadError, decode_batch, encode_batch
from edgeomni.sync.config import BrokerAddress, SyncConfig

_WRITER = """
import sys
from edgeomni.outbox import Outbox
outbox = Outbox(sys.argv[1])
i = 0
while True:
    print(outbox.append("caption", {"type": "final", "text": f"line {i}"}), flush=True)
    i += 1
"""


def test_committed_records_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    acknowledged = []
    assert proc.stdout is not None
    while len(acknowledged) < 200:
        acknowledged.append(proc.stdout.readline().strip())
    proc.send_signal(signal.SIGKILL)  # mid-write: no close, no checkpoint
    proc.wait()
    outbox = Outbox(path)
    stored = {r.id for r in outbox.pending(limit=100_000)}
    outbox.close()
    assert set(acknowledged) <= stored


def test_retention_drops_telemetry_first_and_hard_examples_last(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite", max_bytes=10**9)
    payload = "x" * 1000
    hard = outbox.append_many([("hard_example", {"blob": payload})] * 5)
    outbox.append_many([("caption", {"blob": payload})] * 5)
    outbox.append_many([("metrics", {"blob": payload})] * 5)
    outbox.max_bytes = 8_500  # room for about 8 of the 15 records
    dropped = outbox.enforce_bounds()
    assert dropped == {"metrics": 5, "caption": 2}
    left = outbox.pending(limit=100)
    assert [r.kind for r in left].count("hard_example") == 5 and {r.id for r in left} >= set(hard)
    assert outbox.stats()["dropped"] == {"metrics": 5, "caption": 2}
    outbox.close()


def test_retention_by_age_gives_hard_examples_longer(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite", max_age_s=3600)
    now = time.time()
    outbox.append("metrics", {"old": True}, ts=now - 7200)
    outbox.append("hard_example", {"old": True}, ts=now - 7200)  # 2 h < 4 x 1 h: kept
    outbox.append("hard_example", {"older": True}, ts=now - 5 * 3600)
    outbox.append("caption", {"new": True}, ts=now)
    assert outbox.enforce_bounds(now) == {"metrics": 1, "hard_example": 1}
    assert sorted(r.kind for r in outbox.pending()) == ["caption", "hard_example"]
    outbox.close()


def test_delete_after_ack_and_append_validation(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite")
    ids = outbox.append_many([("error", {"message": str(i)}) for i in range(5)])
    assert outbox.delete(ids[:3]) == 3 and [r.id for r in outbox.pending()] == ids[3:]
    with pytest.raises(Exception, match="unknown record kind 'telemetry'"):
        outbox.append("telemetry", {})
    outbox.close()


def _frames(seconds: float) -> list[AudioFrame]:
    t = np.arange(int(seconds * 16000)) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return [AudioFrame(audio[i:i + 512], i / 16000, 0.0) for i in range(0, len(audio), 512)]


def _event(kind: str, **extra: object) -> dict:
    return {"type": kind, "stream": "main", "text": "hello there", "start": 1.0, "end": 2.5, "emitted": 2.6,
            "latency_ms": 120.0, **extra}


async def _feed(sink: OutboxSink, events: list[dict]) -> None:
    for record in events:
        await sink.send(event(record))


def test_sink_records_captions_metrics_counters_errors_and_hard_examples(tmp_path: Path) -> None:
    import asyncio

    outbox = Outbox(tmp_path / "o.sqlite")
    sink = OutboxSink(outbox, OutboxConfig(hard_examples=True, hard_example_below=-0.5))
    for frame in _frames(4.0):
        sink.tap(frame)
    sink.tap(VideoFrame(np.full((90, 160, 3), 200, np.uint8), 2.0, 0.0))
    events = [{"type": "start", "stream": "main", "source": "clip.wav"}, _event("partial"),
              _event("final", confidence=-0.2), _event("final", confidence=-1.3), _event("visual"),
              {"type": "error", "stream": "main", "message": "decode error at 3.1 s"},
              {"type": "end", "stream": "main", "source": "clip.wav", "latency_ms": {"final": {"n": 2}},
               "counters": {"partials_skipped": 1}, "sink_drops": {}, "error": None}]
    asyncio.run(_feed(sink, events))
    records = outbox.pending(limit=100)
    kinds = [r.kind for r in records]
    assert kinds.count("caption") == 3  # two finals and the visual note; the partial is superseded
    assert kinds.count("hard_example") == 1 and kinds.count("error") == 1 and kinds.count("counters") == 1
    assert kinds.count("metrics") == 2  # the window flushed at the end, and the run summary
    hard = next(r.data() for r in records if r.kind == "hard_example")
    assert hard["text"] == "hello there" and hard["confidence"] == -1.3
    with wave.open(io.BytesIO(base64.b64decode(hard["audio_wav_b64"]))) as clip:
        assert clip.getframerate() == 16000 and clip.getnframes() == 24000  # exactly [1.0, 2.5] s
    png = base64.b64decode(hard["thumbnail_png_b64"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (160, 90)
    idat = png[png.index(b"IDAT") + 4:png.index(b"IEND") - 8]
    assert len(zlib.decompress(idat)) == 90 * (1 + 160 * 3)
    counters = next(r.data() for r in records if r.kind == "counters")
    assert counters["counters"] == {"partials_skipped": 1} and counters["outbox_dropped"] == {}
    window = next(r.data() for r in records if r.kind == "metrics" and r.data()["scope"] == "window")
    assert window["latency_ms"]["final"]["n"] == 2 and window["latency_ms"]["partial"]["n"] == 1
    outbox.close()


def test_sink_keeps_unsure_visual_notes_with_the_frame_they_were_about(tmp_path: Path) -> None:
    """A visual note whose top label is unsure keeps its frame (a PNG, shorter side hard_image_side), at most one
    per hard_image_every_s; confident notes keep none. The frame is the one at the note's end, not the latest."""
    import asyncio

    from PIL import Image

    from edgeomni.trainer.schema import validate_record

    outbox = Outbox(tmp_path / "o.sqlite")
    config = OutboxConfig(hard_examples=True, hard_image_below=0.5, hard_image_every_s=5.0, hard_image_side=64)
    sink = OutboxSink(outbox, config)

    def note(end: float, score: float) -> dict:
        return _event("visual", start=end - 1.5, end=end, text="on screen: tabby",
                      labels=[{"label": "tabby", "score": score}, {"label": "tiger cat", "score": 0.1}])

    async def play() -> None:
        await sink.send(event({"type": "start", "stream": "main", "source": "cam.mp4"}))
        notes = {2.0: note(2.0, 0.3), 3.0: note(3.0, 0.3), 8.0: note(8.0, 0.9), 9.0: note(9.0, 0.2)}
        for i in range(101):  # 10 fps; each frame's grey level says when it was shown
            pts = i / 10
            sink.tap(VideoFrame(np.full((120, 200, 3), i, np.uint8), pts, 0.0))
            if round(pts - 0.6, 1) in notes:  # vision reports on a block ~0.6 s after its last frame
                await sink.send(event(notes[round(pts - 0.6, 1)]))

    asyncio.run(play())
    hard = [r.data() for r in outbox.pending(limit=100) if r.kind == "hard_example"]
    assert [h["end"] for h in hard] == [2.0, 9.0]  # 3.0: within 5 s of the last; 8.0: confident
    for example in hard:
        assert example["modality"] == "vision" and example["confidence"] == example["labels"][0]["score"]
        png = base64.b64decode(example["image_png_b64"])
        image = np.asarray(Image.open(io.BytesIO(png)))
        assert image.shape == (64, 107, 3)  # 120x200 scaled to a shorter side of 64
        assert example["end"] - 0.3 < example["frame_pts"] <= example["end"]
        assert int(image.mean().round()) == round(example["frame_pts"] * 10)  # that frame's pixels
        assert example["frame_size"] == [200, 120]
        record = {"id": "0123456789", "kind": "hard_example", "fleet": "f", "device": "d", "ts": time.time(),
                  "data": example}
        assert validate_record(record, "f", "d", "hard_example") is record
    outbox.close()


def test_hard_examples_are_opt_in(tmp_path: Path) -> None:
    import asyncio

    outbox = Outbox(tmp_path / "o.sqlite")
    sink = OutboxSink(outbox, OutboxConfig())
    asyncio.run(_feed(sink, [_event("final", confidence=-3.0)]))
    assert [r.kind for r in outbox.pending()] == ["caption"]
    outbox.close()


def test_codec_round_trip_and_rejections() -> None:
    records = [{"id": "a" * 10, "n": i} for i in range(3)]
    assert decode_batch(encode_batch(records), 10_000) == records
    assert decode_batch(encode_batch(records, "none"), 10_000) == records
    cases = {
        "oversized": encode_batch([{"pad": "y" * 5000}], "none"),
        "bad_compression": b"\x00\x01garbage",
        "malformed_json": zlib.compress(b"{not json"),
        "bad_format": zlib.compress(json.dumps({"v": 99, "records": []}).encode()),
    }
    for reason, payload in cases.items():
        with pytest.raises(PayloadError) as caught:
            decode_batch(payload, 4096)
        assert caught.value.reason == reason
    bomb = zlib.compress(b"{" + b" " * 10_000_000 + b"}")
    with pytest.raises(PayloadError, match="inflates past the limit"):
        decode_batch(bomb, 20_000)  # 10 kB on the wire, 10 MB inflated


def test_schema_names_the_bad_field() -> None:
    from edgeomni.trainer.schema import SchemaError, validate_record

    good = {"id": "0123456789", "kind": "caption", "fleet": "f", "device": "d", "ts": time.time(),
            "data": {"type": "final", "text": "hi", "start": 0.0, "end": 1.0, "latency_ms": 80.0}}
    assert validate_record(good, "f", "d", "caption") is good
    bad = [({**good, "ts": "yesterday"}, "field 'ts': expected number"),
           ({**good, "data": {**good["data"], "latency_ms": True}}, "data.latency_ms expected number"),
           ({**good, "kind": "weather"}, "unknown 'weather'"),
           ({**good, "id": "x/y#"}, "field 'id'"),
           ({**good, "data": {"type": "final"}}, "missing data.text")]
    for record, reason in bad:
        with pytest.raises(SchemaError, match=reason):
            validate_record(record, "f", "d", "caption")
    from edgeomni.outbox.media import png_bytes

    png = base64.b64encode(png_bytes(np.zeros((4, 6, 3), np.uint8))).decode()
    frame = {"modality": "vision", "text": "on screen: kite", "confidence": 0.3, "start": 0.0, "end": 1.5,
             "labels": [{"label": "kite", "score": 0.3}], "image_png_b64": png}
    hard = {**good, "kind": "hard_example", "data": frame}
    assert validate_record(hard, "f", "d", "hard_example") is hard
    bad_frames = [({**frame, "modality": "smell"}, "data.modality 'smell' is not one of speech, vision"),
                  ({k: v for k, v in frame.items() if k != "image_png_b64"}, r"\(vision\): missing data.image_png_b64"),
                  ({**frame, "image_png_b64": base64.b64encode(b"GIF89a").decode()}, "image_png_b64: not a PNG"),
                  ({**frame, "image_png_b64": "%%%"}, "image_png_b64 is not base64"),
                  ({**frame, "labels": [{"label": "kite"}]}, "data.labels expected a list of"),
                  ({k: v for k, v in frame.items() if k != "modality"}, r"\(speech\): missing data.audio_wav_b64")]
    for data, reason in bad_frames:
        with pytest.raises(SchemaError, match=reason):
            validate_record({**hard, "data": data}, "f", "d", "hard_example")


def test_sync_config_validates_and_parses_broker_urls() -> None:
    address = BrokerAddress.parse("mqtts://dev%2Da:p%40ss@broker.example:8884")
    assert (address.host, address.port, address.tls, address.username, address.password) == \
        ("broker.example", 8884, True, "dev-a", "p@ss")
    assert BrokerAddress.parse("mqtt://h").port == 1883
    assert "p@ss" not in address.redacted()
    config = RunConfig.from_dict({"sync": {"broker": "mqtt://h:1884", "fleet": "lab", "batch_size": 50},
                                  "outbox": {"hard_examples": True}})
    assert config.sync.batch_size == 50 and config.outbox.hard_examples
    for raw, message in [({"sync": {"broker": "http://h"}}, "scheme mqtt:// or mqtts://"),
                         ({"sync": {"fleet": "a/b"}}, "sync.fleet"),
                         ({"sync": {"compression": "lz4"}}, "sync.compression"),
                         ({"sync": {"cert_file": "c.pem"}}, "both or neither"),
                         ({"outbox": {"max_mb": 0.1}}, "outbox.max_mb")]:
        with pytest.raises(ConfigError, match=message):
            RunConfig.from_dict(raw)
    assert SyncConfig(device="bundles").device == "bundles"
    with pytest.raises(ConfigError, match="not 'bundles'"):
        SyncConfig(device="bundles").validate()


def test_dataset_recovery_finishes_committed_and_drops_uncommitted_writes(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow", reason="pyarrow (the trainer extra) is not installed")
    from edgeomni.trainer.dataset import Dataset

    record = {"id": "rec-000001", "kind": "error", "fleet": "f", "device": "d", "ts": time.time(),
              "data": {"message": "m"}}
    dataset = Dataset(tmp_path)
    dataset.append("d", [record])
    final = next((tmp_path / "dataset").rglob("*.parquet"))
    committed_tmp = final.with_name(final.name + ".tmp")
    final.rename(committed_tmp)  # as if killed between the index commit and the rename
    orphan = final.with_name("part-orphan.parquet.tmp")
    orphan.write_bytes(b"half written")  # as if killed before the index commit
    dataset.close()
    reopened = Dataset(tmp_path)
    assert final.exists() and not committed_tmp.exists() and not orphan.exists()
    assert reopened.new_ids(["rec-000001", "rec-000002"]) == {"rec-000002"}
    reopened.close()


def _batches(device: str, day_offsets: list[int], per_batch: int = 3) -> list[list[dict]]:
    """One list of error records per MQTT batch, dated `day_offsets` days ago."""
    batches = []
    for b, days in enumerate(day_offsets):
        ts = time.time() - days * 86400
        batches.append([{"id": f"{device}-{b:03d}-{i:03d}", "kind": "error", "fleet": "f", "device": device,
                         "ts": ts, "data": {"message": f"batch {b} record {i}"}} for i in range(per_batch)])
    return batches


def test_compaction_merges_past_partitions_and_keeps_every_record_once(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow", reason="pyarrow (the trainer extra) is not installed")
    import sqlite3

    from edgeomni.trainer.dataset import Dataset, read_dataset

    dataset = Dataset(tmp_path)
    for device, days in (("cam-a", [2, 2, 2, 1, 1, 0, 0]), ("cam-b", [2, 2, 0])):
        for batch in _batches(device, days):
            dataset.append(device, batch)
    before = sorted(map(str, read_dataset(tmp_path).sort_by("id").to_pylist()))
    assert len(before) == 30 and len(list((tmp_path / "dataset").rglob("*.parquet"))) == 10
    today = time.strftime("%Y-%m-%d", time.gmtime())
    statements: list[str] = []
    dataset._db.set_trace_callback(statements.append)
    done = dataset.compact(before=today, min_files=2)
    dataset._db.set_trace_callback(None)
    assert done == {"partitions": 3, "files_merged": 7, "records": 21}  # 2 days of cam-a, 1 of cam-b
    files = sorted(p.relative_to(tmp_path / "dataset") for p in (tmp_path / "dataset").rglob("*.parquet"))
    assert len(files) == 6  # 3 compacted + today's 2 of cam-a and 1 of cam-b, left alone
    assert sum(p.name.startswith("part-compact-") for p in files) == 3
    assert sorted(map(str, read_dataset(tmp_path).sort_by("id").to_pylist())) == before  # same rows, once
    with sqlite3.connect(tmp_path / "index.sqlite") as db:
        pointed = {row[0] for row in db.execute("SELECT DISTINCT file FROM ids")}
        listed = {row[0] for row in db.execute("SELECT name FROM files")}
        # The index is touched by key only: a scan reads every id the trainer ever stored, per partition (at
        # 3M stored ids, compacting 1500 files took 11.3 s that way, 1.8 s by key: BENCHMARKS).
        on_ids = {s for s in statements if re.match(r"\s*(UPDATE|DELETE FROM|SELECT .* FROM) ids\b", s)}
        plans = {s: " ".join(str(row[-1]) for row in db.execute(f"EXPLAIN QUERY PLAN {s}")) for s in on_ids}
    assert on_ids and not [s for s, plan in plans.items() if "SCAN" in plan], plans
    assert pointed == listed == {str(f) for f in files}  # every id points at a file that exists
    assert dataset.new_ids(["cam-a-000-000", "new-000001"]) == {"new-000001"}  # dedup still knows them
    assert dataset.compact(min_files=2)["partitions"] == 1  # without `before`: today's cam-a too
    dataset.close()


def test_an_interrupted_compaction_is_finished_on_restart(tmp_path: Path) -> None:
    """Killed after the index commit, before the rename and the deletes: the restart renames the compacted
    file and deletes the files it replaced, and no reader ever sees a record twice."""
    pytest.importorskip("pyarrow", reason="pyarrow (the trainer extra) is not installed")
    import shutil

    from edgeomni.trainer.dataset import Dataset, read_dataset

    dataset = Dataset(tmp_path)
    for batch in _batches("cam-a", [1, 1, 1]):
        dataset.append("cam-a", batch)
    partition = next((tmp_path / "dataset").rglob("part-*.parquet")).parent
    saved = tmp_path / "saved"
    shutil.copytree(partition, saved)
    dataset.compact(min_files=2)
    compacted = next(partition.glob("part-compact-*.parquet"))
    # Rebuild the state a kill leaves: compacted file still a .tmp, the three old files still there.
    compacted.rename(compacted.with_name(compacted.name + ".tmp"))
    for old in saved.iterdir():
        shutil.copy(old, partition / old.name)
    dataset._db.executemany("INSERT INTO retired (name) VALUES (?)",
                            [(str((partition / p.name).relative_to(tmp_path / "dataset")),) for p in saved.iterdir()])
    assert len(read_dataset(tmp_path)) == 0  # committed file not renamed yet: readers skip it, never doubling
    dataset.close()
    reopened = Dataset(tmp_path)
    assert sorted(p.name for p in partition.iterdir()) == [compacted.name]
    assert len(read_dataset(tmp_path)) == 9
    reopened.close()


def test_compact_command_refuses_while_a_trainer_ingests(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow", reason="pyarrow (the trainer extra) is not installed")
    from edgeomni.trainer.dataset import Dataset

    def compact(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "edgeomni", "trainer", "compact", "--data", str(tmp_path),
                               *extra], capture_output=True, text=True, timeout=60)

    live = Dataset(tmp_path)
    for batch in _batches("cam-a", [1, 1]):
        live.append("cam-a", batch)
    busy = compact()
    assert busy.returncode != 0 and "in use by another trainer" in busy.stderr
    live.close()
    assert "--before: expected a date YYYY-MM-DD, got 'yesterday'" in compact("--before", "yesterday").stderr
    done = compact()
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"partitions": 1, "files_merged": 2, "records": 6}


def test_sync_and_outbox_import_no_optional_clients() -> None:
    """paho-mqtt and pyarrow are optional: `edgeomni run` without sync must not need them."""
    code = ("import sys\n"
            "for m in ['edgeomni.cli', 'edgeomni.outbox.sink', 'edgeomni.sync.device', 'edgeomni.sync.worker',"
            " 'edgeomni.trainer.cli']: __import__(m)\n"
            "import edgeomni.cli; edgeomni.cli.build_parser()\n"
            "print(','.join(m for m in ('paho', 'pyarrow') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported at start-up: {out.stdout.strip()}"


def test_one_trainer_per_data_directory(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow", reason="pyarrow (the trainer extra) is not installed")
    from edgeomni.errors import EdgeOmniError
    from edgeomni.trainer.dataset import Dataset

    first = Dataset(tmp_path)
    with pytest.raises(EdgeOmniError, match="in use by another trainer"):
        Dataset(tmp_path)
    first.close()
    Dataset(tmp_path).close()  # free again once the first one is gone


def test_build_sets_fractions_are_checked_before_any_data_is_read(tmp_path: Path) -> None:
    from edgeomni.errors import EdgeOmniError
    from edgeomni.trainer.build_sets import build_sets

    with pytest.raises(EdgeOmniError, match=r"--heldout-fraction: expected a fraction in \(0, 1\), got 1.5"):
        build_sets([tmp_path], tmp_path / "out", heldout_fraction=1.5)
    with pytest.raises(EdgeOmniError, match="expected a sum under 1"):
        build_sets([tmp_path], tmp_path / "out", calibration_fraction=0.6, heldout_fraction=0.4)
    with pytest.raises(EdgeOmniError, match="--scene-block-s: expected seconds >= 0"):
        build_sets([tmp_path], tmp_path / "out", scene_block_s=-1)
    with pytest.raises(EdgeOmniError, match="not a trainer data directory"):
        build_sets([tmp_path], tmp_path / "out")


def _hard_frames(scenes_and_times: list[tuple[int, float]]) -> list[dict]:
    from edgeomni.outbox.media import png_bytes

    png = base64.b64encode(png_bytes(np.full((256, 320, 3), 90, np.uint8))).decode()
    return [{"id": f"frame-{scene}-{i}", "kind": "hard_example", "fleet": "f", "device": "cam-a", "ts": ts,
             "data": {"modality": "vision", "text": "on screen: kite", "confidence": 0.3, "start": 0.0, "end": 1.5,
                      "labels": [{"label": "kite", "score": 0.3}], "image_png_b64": png, "source": "cam.mp4",
                      "stream": "main", "scene": scene}}
            for i, (scene, ts) in enumerate(scenes_and_times)]


def _sides(sets: Path, key: str) -> dict[object, set[str]]:
    sides: dict[object, set[str]] = {}
    for purpose in ("calibration", "heldout", "distillation"):
        for item in json.loads((sets / "images" / purpose / "manifest.json").read_text())["files"]:
            sides.setdefault(item[key], set()).add(purpose)
    return sides


def test_build_sets_keeps_each_scene_s_frames_on_one_side(tmp_path: Path) -> None:
    """Frames of one scene are near-copies: build-sets never puts one in calibration/training and another in the
    held-out set that gates the export."""
    pytest.importorskip("pyarrow", reason="pyarrow (the trainer extra) is not installed")
    from edgeomni.trainer.build_sets import build_sets
    from edgeomni.trainer.dataset import Dataset

    dataset = Dataset(tmp_path / "data")
    dataset.append("cam-a", _hard_frames([(scene, time.time()) for scene in range(1, 7) for _ in range(3)]))
    dataset.close()
    summary = build_sets([tmp_path / "data"], tmp_path / "sets", seed=3)
    assert summary["image_scenes"] == 6 and "calibration" not in summary  # no speech: no audio sets
    for purpose in ("calibration", "heldout", "distillation"):
        assert summary["images"][purpose]["count"] == 6  # two whole scenes each
    side_of_scene = _sides(tmp_path / "sets", "scene")
    assert all(len(sides) == 1 for sides in side_of_scene.values()) and len(side_of_scene) == 6


def test_build_sets_cuts_a_scene_that_lasts_into_blocks_of_wall_time(tmp_path: Path) -> None:
    """A fixed camera never cuts: its one scene is split into --scene-block-s blocks, each kept whole, so the
    fleet still gets held-out frames; with 0 the scene stays whole and the held-out set is empty."""
    pytest.importorskip("pyarrow", reason="pyarrow (the trainer extra) is not installed")
    from edgeomni.trainer.build_sets import build_sets
    from edgeomni.trainer.dataset import Dataset

    start = time.time() - 7200
    dataset = Dataset(tmp_path / "data")  # one frame every 200 s for 40 min, all scene 1
    dataset.append("cam-a", _hard_frames([(1, start + 200 * i) for i in range(12)]))
    dataset.close()
    summary = build_sets([tmp_path / "data"], tmp_path / "sets", seed=1, scene_block_s=600)
    assert summary["image_scenes"] == 4
    assert [summary["images"][p]["count"] for p in ("calibration", "heldout", "distillation")] == [6, 3, 3]
    block_sides = _sides(tmp_path / "sets", "id")
    for block in range(4):  # frames 3b..3b+2 share a block: one side each
        assert len(set().union(*(block_sides[f"frame-1-{3 * block + i}"] for i in range(3)))) == 1
    whole = build_sets([tmp_path / "data"], tmp_path / "whole", seed=1, scene_block_s=0)
    assert whole["image_scenes"] == 1 and whole["images"]["heldout"]["count"] == 0

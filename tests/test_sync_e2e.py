"""The data loop end to end, device side: `edgeomni run --sync` -> real Mosquitto -> `edgeomni trainer` -> Parquet.

Real broker (a private mosquitto with passwords and ACLs), real subprocesses, real models on espeak-ng speech.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import pytest
from media_factory import make_speech_wav
from sync_support import outbox_count, start_trainer, stop, stored_ids, wait_for

from edgeomni.outbox import Outbox

pytest.importorskip("paho.mqtt", reason="paho-mqtt (the sync/trainer extra) is not installed")
pytest.importorskip("pyarrow", reason="pyarrow (the trainer extra) is not installed")

TEXT = "Please send the quarterly report to the finance team by Friday."


def _config(tmp_path: Path, outbox: Path, drain_s: float = 20.0) -> Path:
    config = tmp_path / "device.toml"
    # every final becomes a hard example (confidence is a mean log-prob, always < 0), so the set builder has data
    config.write_text(f'[outbox]\npath = "{outbox}"\nhard_examples = true\nhard_example_below = 0.0\n\n'
                      f'[sync]\nfleet = "test"\ndevice = "dev-a"\ndrain_timeout_s = {drain_s}\n')
    return config


def _run_device(bundle: Path, wav: Path, config: Path, sync_url: str) -> tuple[int, list[dict], str]:
    cmd = [sys.executable, "-m", "edgeomni", "run", "--bundle", str(bundle), "--source", str(wav), "--no-realtime",
           "--no-visual", "--sink", "jsonl:-", "--config", str(config), "--sync", sync_url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env={**os.environ})
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, events, proc.stderr


def _cli(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "edgeomni", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_device_run_with_sync_lands_exactly_its_records(default_bundle: Path, tmp_path: Path, mqtt_broker) -> None:
    broker = mqtt_broker(users={"dev-a": "pw-a"}, fleet="test")
    data, outbox = tmp_path / "data", tmp_path / "outbox.sqlite"
    trainer = start_trainer(broker.url_for("trainer"), data, tmp_path / "trainer.log")
    try:
        wav = make_speech_wav(tmp_path / "s.wav", TEXT, speed=150)
        code, events, err = _run_device(default_bundle, wav, _config(tmp_path, outbox), broker.url_for("dev-a"))
        assert code == 0, err
        finals = [e for e in events if e["type"] == "final"]
        assert finals, f"no captions from the device: {err[-2000:]}"
        assert outbox_count(outbox) == 0, "the run ended with undelivered records although the broker was up"

        # captions + one hard example per final + the run's metrics and counters (+ any metrics windows)
        at_least = 2 * len(finals) + 2
        wait_for(lambda: len(stored_ids(data)) >= at_least, 60, f"{at_least} records in the dataset")
        report = json.loads(_cli("trainer", "report", "--data", str(data), "--json"))
        ids = stored_ids(data)
        assert len(ids) == len(set(ids)), "duplicates in the dataset"
        device = report["devices"]["dev-a"]
        assert list(report["devices"]) == ["dev-a"]
        assert device["captions"] == len(finals)
        assert device["hard_examples"] == len(finals)
        assert device["runs"] == 1 and device["errors"] == 0
        assert device["latency_ms"]["final"]["n"] == len(finals)
        assert report["ingest"]["accepted"] == len(ids) and report["ingest"].get("duplicates", 0) == 0
        from edgeomni.trainer.dataset import read_dataset

        stored = read_dataset(data).to_pylist()
        captions = sorted((json.loads(r["data"])["start"], r["text"]) for r in stored if r["kind"] == "caption")
        assert [text for _, text in captions] == [e["text"] for e in finals]  # the device's finals, word for word
        assert {r["device"] for r in stored} == {"dev-a"} and {r["fleet"] for r in stored} == {"test"}
        table = _cli("trainer", "report", "--data", str(data))
        assert "dev-a" in table and "final p50" in table

        sets = json.loads(_cli("trainer", "build-sets", "--data", str(data), "--out", str(tmp_path / "sets")))
        manifests = [json.loads((tmp_path / "sets" / name / "manifest.json").read_text())
                     for name in ("calibration", "distillation")]
        assert sets["calibration"]["count"] == manifests[0]["count"] >= 1
        texts = {f["text"] for m in manifests for f in m["files"]}
        assert texts <= {e["text"] for e in finals}
        for manifest, name in zip(manifests, ("calibration", "distillation"), strict=True):
            assert manifest["format"] == "edgeomni-audio-set/1" and manifest["seed"] == 0
            for item in manifest["files"]:
                with wave.open(str(tmp_path / "sets" / name / item["file"])) as clip:
                    assert clip.getframerate() == 16000
                    assert clip.getnframes() / 16000 == pytest.approx(item["seconds"], abs=0.01)
                    assert item["seconds"] > 0.5  # the final's audio, cut from the ring buffer
    finally:
        stop(trainer)


@pytest.mark.slow
def test_offline_device_keeps_records_and_catches_up(default_bundle: Path, tmp_path: Path, mqtt_broker) -> None:
    broker = mqtt_broker(users={"dev-a": "pw-a"}, fleet="test")
    broker.stop()  # the device runs with no network at all
    data, outbox = tmp_path / "data", tmp_path / "outbox.sqlite"
    wav = make_speech_wav(tmp_path / "s.wav", TEXT, speed=150)
    code, events, err = _run_device(default_bundle, wav, _config(tmp_path, outbox, drain_s=1.0),
                                    broker.url_for("dev-a"))
    assert code == 0, err
    assert any(e["type"] == "final" for e in events), err[-2000:]
    assert "stay in the outbox" in err
    kept = Outbox(outbox)
    expected = {r.id for r in kept.pending(limit=10_000)}
    kinds = {r.kind for r in kept.pending(limit=10_000)}
    kept.close()
    assert {"caption", "hard_example", "metrics", "counters"} <= kinds

    broker.start_again()
    trainer = start_trainer(broker.url_for("trainer"), data, tmp_path / "trainer.log")
    try:
        _cli("sync", "--outbox", str(outbox), "--broker", broker.url_for("dev-a"), "--fleet", "test",
             "--device", "dev-a", "--exit-when-empty")
        assert outbox_count(outbox) == 0
        wait_for(lambda: len(stored_ids(data)) >= len(expected), 60, "the caught-up records")
        ids = stored_ids(data)
        assert sorted(ids) == sorted(expected)
    finally:
        stop(trainer)


@pytest.mark.slow
def test_camera_frames_become_the_export_s_calibration_and_heldout_sets(default_bundle: Path, tmp_path: Path,
                                                                        mqtt_broker) -> None:
    """The vision side of the data loop: a device labels a clip of real photos and keeps the frames it was unsure
    about, sync -> Mosquitto -> trainer, build-sets splits them, and `edgeomni export` calibrates, fine-tunes
    and gates MobileNetV2 INT8 on them."""
    from edgeomni.bench.video_media import letterbox, make_scene_clip
    from edgeomni.datasets.photo_sets import photo_pool

    broker = mqtt_broker(users={"dev-a": "pw-a"}, fleet="test")
    data, outbox, sets = tmp_path / "data", tmp_path / "outbox.sqlite", tmp_path / "sets"
    photos = [letterbox(photo.image, (480, 270), (255, 255, 255)) for photo in photo_pool("calibration")[:10]]
    clip = make_scene_clip(tmp_path / "camera.mp4", photos, seconds_each=2.0, fps=10)
    config = tmp_path / "device.toml"
    # every visual note keeps its frame (no rate limit), so ten scenes give about ten hard frames
    config.write_text(f'[outbox]\npath = "{outbox}"\nhard_examples = true\nhard_image_below = 1.0\n'
                      f'hard_image_every_s = 0.0\n\n[sync]\nfleet = "test"\ndevice = "dev-a"\n')
    trainer = start_trainer(broker.url_for("trainer"), data, tmp_path / "trainer.log")
    try:
        cmd = [sys.executable, "-m", "edgeomni", "run", "--bundle", str(default_bundle), "--source", str(clip),
               "--no-realtime", "--no-speech", "--sink", "jsonl:-", "--config", str(config),
               "--sync", broker.url_for("dev-a")]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stderr
        notes = [json.loads(line) for line in proc.stdout.splitlines() if '"type": "visual"' in line]
        labelled = [n for n in notes if n.get("labels")]
        assert len(labelled) >= 6, proc.stderr[-2000:]
        wait_for(lambda: _hard_frames(data) >= len(labelled), 60, f"{len(labelled)} hard frames in the dataset")
        assert _hard_frames(data) == len(labelled)
    finally:
        stop(trainer)

    summary = json.loads(_cli("trainer", "build-sets", "--data", str(data), "--out", str(sets)))
    assert "calibration" not in summary  # no speech hard examples: no audio sets
    counts = {purpose: summary["images"][purpose]["count"] for purpose in ("calibration", "heldout", "distillation")}
    assert sum(counts.values()) == len(labelled) and min(counts.values()) >= 1
    seen: dict[str, str] = {}
    for purpose in counts:
        manifest = json.loads((sets / "images" / purpose / "manifest.json").read_text())
        assert manifest["format"] == "edgeomni-image-set/1" and manifest["count"] == counts[purpose]
        for item in manifest["files"]:
            assert (item["width"], item["height"]) == (455, 256)  # 480x270 kept with a shorter side of 256
            assert item["device"] == "dev-a" and item["labels"] and item["id"] not in seen
            seen[item["id"]] = purpose

    root = Path(__file__).resolve().parents[1]
    trainer_sets = f"trainer:{sets}"
    export = subprocess.run(
        [sys.executable, "-m", "edgeomni", "export", str(root / "export" / "mobilenet_v2.yaml"),
         "--out", str(tmp_path / "export"), "--set", f"calibration.images={trainer_sets}",
         "--set", f"heldout.images={trainer_sets}", "--set", f"finetune.images={trainer_sets}",
         "--set", "steps=[export, quantize, finetune, gate]", "--set", "finetune.steps=3",
         "--set", "finetune.views=8", "--set", "finetune.cutouts=''", "--set", "latency_runs=4",
         "--set", "gate.min=0.0"], capture_output=True, text=True, timeout=900)
    assert export.returncode == 0, export.stdout[-3000:] + export.stderr[-3000:]
    report = json.loads((tmp_path / "export" / "bundle" / "report.json").read_text())
    assert report["calibration"]["count"] == counts["calibration"]
    assert report["calibration"]["strata"] == {"dev-a": counts["calibration"]}
    assert report["calibration"]["source"].startswith("trainer set") and report["heldout"]["count"] == counts["heldout"]
    finetuned = report["components"]["mobilenet-v2"]["quantization"]["finetune"]
    assert finetuned["extra_images"].startswith(f"{counts['distillation']} ")
    assert finetuned["training_images"] == counts["calibration"] + counts["distillation"] + 8


def _hard_frames(data: Path) -> int:
    if not (data / "index.sqlite").exists():
        return 0
    return json.loads(_cli("trainer", "report", "--data", str(data), "--json"))["devices"].get(
        "dev-a", {}).get("hard_frames", 0)

